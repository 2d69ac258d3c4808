/**
 * The fallback walk: an open primary hands over to its fallback (priced as the fallback),
 * a stale cache answer serves when every target is down, and otherwise a 503 tells the
 * client when to come back. Streams: success counts when they complete, a break-off counts
 * as a failure and reaches the client as an SSE error event after the chunks it got.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import { ApiError, priceFromUsdPerMillion } from '../plugins/exchange'
import { StreamRegistry } from '../plugins/streams'
import { relayStream } from '../src/routes/chat-stream'
import type { ChatCompletion } from '../src/upstream/provider'
import { UpstreamError } from '../src/upstream/provider'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import {
  chatRequest,
  type FakeClock,
  fakeClock,
  newExchange,
  type Rig,
  rejection,
  rig,
} from './support/resilience'

let primary: SimServer
let backup: SimServer
let clock: FakeClock
let current: Rig | undefined
const signal = new AbortController().signal
const staleAnswer: ChatCompletion = {
  id: 'chatcmpl-stale',
  object: 'chat.completion',
  created: 0,
  model: 'm-1',
  choices: [{ index: 0, message: { role: 'assistant', content: 'from the cache' }, finish_reason: 'stop' }],
}

beforeAll(async () => {
  ;[primary, backup] = await Promise.all([startSimServer(), startSimServer()])
})
afterAll(() => Promise.all([primary.stop(), backup.stop()]))
beforeEach(() => {
  primary.reset()
  backup.reset()
  clock = fakeClock()
})
afterEach(() => current?.close())

function setup(breaker: Record<string, unknown> = {}): Rig {
  current = rig({
    clock,
    file: {
      providers: {
        up: { type: 'openai', base_url: primary.url },
        alt: { type: 'openai', base_url: backup.url },
      },
      models: {
        'm-1': {
          provider: 'up',
          upstream_model: 'sim-1',
          pricing: { input: 1, output: 2 },
          fallbacks: ['m-2'],
        },
        'm-2': { provider: 'alt', upstream_model: 'sim-1', pricing: { input: 3, output: 4 } },
        'e-1': {
          provider: 'up',
          kind: 'embedding',
          upstream_model: 'sim-embed-1',
          pricing: { input: 1, output: 0 },
        },
      },
      breaker: { retries: { max_retries: 0 }, failure_threshold: 2, ...breaker },
    },
  })
  return current
}

/** Two 500s from `sim` open the breaker of `target` (a fallback may serve those calls). */
async function open(r: Rig, sim: SimServer, model: string, target: string) {
  sim.addFaults([{ status: 500, times: 2 }])
  for (let i = 0; i < 2; i++)
    await r.resilience.chat(newExchange(), chatRequest(model), { signal }).catch(() => {})
  expect(r.breakers.view(target).state).toBe('open')
}

describe('fallback chain', () => {
  test('primary open: the fallback serves, with headers, priced as the fallback', async () => {
    const r = setup()
    await open(r, primary, 'm-1', 'up:sim-1')

    const exchange = newExchange()
    const before = primary.stats.requests
    const answer = await r.resilience.chat(exchange, chatRequest('m-1'), { signal })
    expect(primary.stats.requests).toBe(before)
    expect(answer.stale).toBe(false)
    expect(answer.headers).toEqual({
      'x-tollgate-model': 'm-2',
      'x-tollgate-fallback': '1',
      'x-tollgate-attempts': '1',
    })
    expect(exchange).toMatchObject({
      servedModel: 'm-2',
      provider: 'alt',
      upstreamModel: 'sim-1',
      attempts: 1,
      fallbackSteps: 1,
    })
    expect(exchange.price).toEqual(priceFromUsdPerMillion({ input: 3, output: 4 }))
    expect(r.breakers.stats().fallbacks).toEqual({ 'm-2': 3 })
  })

  test('primary attempts exhausted: the fallback serves in the same request', async () => {
    const r = setup({ retries: { max_retries: 1 } })
    primary.addFaults([{ status: 502, times: 2 }])
    const exchange = newExchange()
    const answer = await r.resilience.chat(exchange, chatRequest('m-1'), { signal })
    expect(answer.headers['x-tollgate-attempts']).toBe('3')
    expect(exchange).toMatchObject({ servedModel: 'm-2', attempts: 3, fallbackSteps: 1 })
  })

  test('every attempt is a traced phase and carries the request id', async () => {
    const r = setup()
    primary.addFaults([{ status: 500 }])
    const exchange = newExchange()
    await r.resilience.chat(exchange, chatRequest('m-1'), { signal })
    expect(exchange.phases.map(({ name, attributes }) => ({ name, attributes }))).toEqual([
      { name: 'upstream', attributes: { provider: 'up', model: 'm-1', attempt: 1, error: 'http 500' } },
      { name: 'upstream', attributes: { provider: 'alt', model: 'm-2', attempt: 1 } },
    ])
    expect(primary.lastHeaders?.get('x-request-id')).toBe(exchange.id)
    expect(backup.lastHeaders?.get('x-request-id')).toBe(exchange.id)
  })

  test('a request the primary refuses (400) is not sent to the fallback', async () => {
    const r = setup()
    primary.addFaults([{ status: 400 }])
    expect(await rejection(r.resilience.chat(newExchange(), chatRequest('m-1'), { signal }))).toBeInstanceOf(
      UpstreamError,
    )
    expect(backup.stats.requests).toBe(0)
  })

  test('all down with a stale cache entry: the stale answer, marked STALE', async () => {
    const r = setup()
    await open(r, backup, 'm-2', 'alt:sim-1')
    await open(r, primary, 'm-1', 'up:sim-1')
    const exchange = newExchange()
    const answer = await r.resilience.chat(exchange, chatRequest('m-1'), {
      signal,
      stale: async (asked) => (asked === exchange ? staleAnswer : null),
    })
    expect(answer).toEqual({
      stale: true,
      value: staleAnswer,
      headers: {
        'x-tollgate-model': 'm-1',
        'x-tollgate-fallback': '2',
        'x-tollgate-attempts': '0',
        'x-cache': 'STALE',
      },
    })
    expect(exchange).toMatchObject({ cacheStatus: 'STALE', servedModel: 'm-1' })
    expect(exchange.price).toEqual(priceFromUsdPerMillion({ input: 1, output: 2 }))
  })

  test('all down without a stale entry: 503 with Retry-After of the earliest half-open', async () => {
    const r = setup()
    await open(r, backup, 'm-2', 'alt:sim-1')
    clock.advance(10_000)
    await open(r, primary, 'm-1', 'up:sim-1')
    const error = await rejection(
      r.resilience.chat(newExchange(), chatRequest('m-1'), { signal, stale: async () => null }),
    )
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({ status: 503, code: 'upstream_unavailable' })
    expect((error as ApiError).headers).toEqual({ 'retry-after': '20', 'x-tollgate-attempts': '0' })
  })

  test('stale answers can be turned off', async () => {
    const r = setup({ stale_cache: false })
    await open(r, backup, 'm-2', 'alt:sim-1')
    await open(r, primary, 'm-1', 'up:sim-1')
    const error = await rejection(
      r.resilience.chat(newExchange(), chatRequest('m-1'), { signal, stale: async () => staleAnswer }),
    )
    expect(error).toMatchObject({ status: 503 })
  })

  test('embeddings run under the same guard', async () => {
    const r = setup({ retries: { max_retries: 1 } })
    primary.addFaults([{ status: 503 }])
    const exchange = newExchange()
    const answer = await r.resilience.embeddings(exchange, { model: 'e-1', input: 'hello' }, { signal })
    expect(answer.value.data).toHaveLength(1)
    expect(answer.headers['x-tollgate-attempts']).toBe('2')
    expect(exchange.servedModel).toBe('e-1')
  })
})

describe('streams', () => {
  test('a stream counts as a success (and its traced phase ends) only once it completes', async () => {
    const r = setup()
    const exchange = newExchange()
    const answer = await r.resilience.chatStream(exchange, chatRequest('m-1'), { signal })
    if (answer.stale) throw new Error('expected a live stream')
    expect(r.breakers.view('up:sim-1').calls).toBe(0)
    expect(exchange.phases).toEqual([])
    while (!(await answer.value.iterator.next()).done);
    expect(r.breakers.view('up:sim-1')).toMatchObject({ calls: 1, failures: 0 })
    expect(exchange.phases.map((phase) => phase.name)).toEqual(['upstream'])
  })

  test('a stream cut mid-answer: an SSE error event after the chunks sent, a settled Exchange, a breaker failure', async () => {
    const r = setup()
    primary.addFaults([{ fail_after_chunks: 2 }])
    const exchange = newExchange()
    const answer = await r.resilience.chatStream(exchange, chatRequest('m-1', { max_tokens: 20 }), { signal })
    if (answer.stale) throw new Error('expected a live stream')
    const frames: string[] = []
    const relay = relayStream(answer.value.iterator, answer.value.first, {
      exchange,
      clientModel: 'm-1',
      includeUsage: false,
      clientSignal: signal,
      abortUpstream: () => {},
      streams: new StreamRegistry(15_000, Date.now),
    })
    for await (const frame of relay) frames.push(String((frame as { data: unknown }).data))
    expect(frames).toHaveLength(3)
    expect(JSON.parse(frames[2]!)).toMatchObject({ error: { code: 'upstream_error' } })
    expect(exchange.settlement).toMatchObject({ outcome: 'error' })
    expect(exchange.usage.completionTokens).toBe(2)
    expect(r.breakers.view('up:sim-1')).toMatchObject({ failures: 1, lastFailure: 'protocol' })
    expect(exchange.phases.at(-1)?.attributes).toMatchObject({ model: 'm-1', error: 'protocol' })
  })

  test('a client that leaves mid-stream frees a probe slot and counts for nothing', async () => {
    const r = setup()
    await open(r, backup, 'm-2', 'alt:sim-1')
    await open(r, primary, 'm-1', 'up:sim-1')
    clock.advance(30_000)
    const answer = await r.resilience.chatStream(newExchange(), chatRequest('m-1'), { signal })
    if (answer.stale) throw new Error('expected a live stream')
    expect(r.breakers.view('up:sim-1')).toMatchObject({ state: 'half_open', probesInFlight: 1 })
    await answer.value.iterator.return?.()
    expect(r.breakers.view('up:sim-1')).toMatchObject({
      state: 'half_open',
      probesInFlight: 0,
      halfOpenSuccesses: 0,
    })
  })
})
