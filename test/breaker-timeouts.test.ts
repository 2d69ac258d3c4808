/**
 * Every kind of timeout fires on its own phase, aborts the upstream request (the simulator
 * server sees its client go away, so no socket is left behind) and answers 504, or lets the
 * fallback serve. Real time here: the limits are tens of milliseconds.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import { ApiError } from '../plugins/exchange'
import { UpstreamError } from '../src/upstream/provider'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { waitFor } from './support/redis'
import { chatRequest, newExchange, type Rig, rejection, rig } from './support/resilience'

let sim: SimServer
let backup: SimServer
let current: Rig | undefined
const signal = new AbortController().signal

beforeAll(async () => {
  ;[sim, backup] = await Promise.all([startSimServer(), startSimServer()])
})
afterAll(() => Promise.all([sim.stop(), backup.stop()]))
beforeEach(() => {
  sim.reset()
  backup.reset()
})
afterEach(() => current?.close())

function setup(
  timeouts: Record<string, number>,
  fallbacks: string[] = [],
  retries = 0,
  provider: Record<string, number> = {},
): Rig {
  current = rig({
    file: {
      providers: {
        up: { type: 'openai', base_url: sim.url, ...provider },
        alt: { type: 'openai', base_url: backup.url },
      },
      models: {
        'm-1': { provider: 'up', upstream_model: 'sim-1', pricing: { input: 1, output: 2 }, fallbacks },
        'm-2': { provider: 'alt', upstream_model: 'sim-1', pricing: { input: 3, output: 4 } },
      },
      breaker: { timeouts, retries: { max_retries: retries, backoff_base_ms: 1 } },
    },
  })
  return current
}

const stream = (r: Rig) => r.resilience.chatStream(newExchange(), chatRequest('m-1'), { signal })

async function expectTimeout(call: Promise<unknown>, r: Rig, kind: string, atLeastMs: number) {
  const started = performance.now()
  const error = await rejection(call)
  const elapsed = performance.now() - started
  expect(error).toBeInstanceOf(ApiError)
  expect(error).toMatchObject({ status: 504, code: 'upstream_timeout' })
  expect(elapsed).toBeGreaterThanOrEqual(atLeastMs - 5)
  // Generous: under a loaded machine the event loop may run late; the kind is what matters.
  expect(elapsed).toBeLessThan(atLeastMs + 1000)
  expect(r.breakers.view('up:sim-1').lastFailure).toBe(`timeout:${kind}`)
  expect(r.breakers.stats().timeouts['up:sim-1']?.[kind as 'connect']).toBe(1)
  await waitFor(() => sim.stats.aborted === 1, 3000, 'the simulator to see the abort')
}

describe('timeouts', () => {
  test('connect: no response headers in time', async () => {
    const r = setup({ connect_ms: 80, ttft_ms: 2000 })
    sim.addFaults([{ stall_ms: 5000 }])
    await expectTimeout(stream(r), r, 'connect', 80)
  })

  test('time to first token: headers came, the first chunk did not', async () => {
    const r = setup({ connect_ms: 2000, ttft_ms: 80 })
    sim.addFaults([{ stall_after_chunks: { chunks: 0, ms: 5000 } }])
    await expectTimeout(stream(r), r, 'ttft', 80)
  })

  test('total: a JSON answer bounded by the whole; connect and ttft do not apply to it', async () => {
    const r = setup({ connect_ms: 20, ttft_ms: 20, total_ms: 150 })
    sim.addFaults([{ stall_ms: 60 }])
    const answer = await r.resilience.chat(newExchange(), chatRequest('m-1'), { signal })
    expect(answer.stale).toBe(false)
    sim.addFaults([{ stall_ms: 5000 }])
    await expectTimeout(r.resilience.chat(newExchange(), chatRequest('m-1'), { signal }), r, 'total', 150)
  })

  test('idle: a stream that stalls between chunks is cut and the breaker hears a failure', async () => {
    const r = setup({ idle_ms: 80 })
    sim.addFaults([{ stall_after_chunks: { chunks: 2, ms: 5000 } }])
    const answer = await stream(r)
    if (answer.stale) throw new Error('expected a live stream')
    const { iterator, first } = answer.value
    expect(first.done).toBe(false)
    expect((await iterator.next()).done).toBe(false)
    const started = performance.now()
    const error = await rejection(iterator.next())
    expect(performance.now() - started).toBeLessThan(80 + 1000)
    expect(error).toBeInstanceOf(UpstreamError)
    expect(error).toMatchObject({ kind: 'timeout', status: 504 })
    expect(r.breakers.view('up:sim-1')).toMatchObject({ failures: 1, lastFailure: 'timeout:idle' })
    await waitFor(() => sim.stats.aborted === 1, 3000, 'the simulator to see the abort')
  })

  test("a provider's own timeout runs on the attempt's timer: the upstream's timeout, retried, not one of the breaker's kinds", async () => {
    const r = setup({ connect_ms: 2000, ttft_ms: 2000, idle_ms: 2000 }, [], 1, { timeout_ms: 80 })
    sim.addFaults([{ stall_ms: 5000 }])
    const started = performance.now()
    const answer = await r.resilience.chat(newExchange(), chatRequest('m-1'), { signal })
    expect(answer.stale).toBe(false)
    expect(performance.now() - started).toBeGreaterThanOrEqual(75)
    expect(r.breakers.view('up:sim-1')).toMatchObject({ failures: 1, lastFailure: 'timeout' })
    expect(r.breakers.stats().timeouts['up:sim-1']).toBeUndefined()
    await waitFor(() => sim.stats.aborted === 1, 3000, 'the simulator to see the abort')

    // In a stream it bounds each next chunk, and pauses while the client holds one.
    sim.addFaults([{ stall_after_chunks: { chunks: 2, ms: 5000 } }])
    const streamed = await stream(r)
    if (streamed.stale) throw new Error('expected a live stream')
    await Bun.sleep(150)
    expect((await streamed.value.iterator.next()).done).toBe(false)
    const error = await rejection(streamed.value.iterator.next())
    expect(error).toMatchObject({
      kind: 'timeout',
      status: 504,
      message: 'Upstream up did not answer within 80 ms.',
    })
    await waitFor(() => sim.stats.aborted === 2, 3000, 'the simulator to see the second abort')
  })

  test('idle does not count the time the client takes between chunks', async () => {
    const r = setup({ idle_ms: 60 })
    const answer = await stream(r)
    if (answer.stale) throw new Error('expected a live stream')
    let chunks = 1
    for (
      let step = await answer.value.iterator.next();
      !step.done;
      step = await answer.value.iterator.next()
    ) {
      chunks++
      await Bun.sleep(80)
    }
    expect(chunks).toBeGreaterThan(2)
    expect(r.breakers.view('up:sim-1')).toMatchObject({ failures: 0, calls: 1 })
  })

  test('a timed-out primary falls back: the fallback serves, no 504', async () => {
    const r = setup({ connect_ms: 80 }, ['m-2'])
    sim.addFaults([{ stall_ms: 5000 }])
    const exchange = newExchange()
    const answer = await r.resilience.chatStream(exchange, chatRequest('m-1'), { signal })
    expect(answer.headers).toEqual({
      'x-tollgate-model': 'm-2',
      'x-tollgate-fallback': '1',
      'x-tollgate-attempts': '2',
    })
    expect(exchange.servedModel).toBe('m-2')
    await waitFor(() => sim.stats.aborted === 1, 3000, 'the simulator to see the abort')
    expect(backup.stats.chatStream).toBe(1)
  })

  test('retries never run past the deadline', async () => {
    const r = setup({ total_ms: 300 }, [], 5)
    sim.addFaults([{ stall_ms: 200, status: 503, times: 5 }])
    const started = performance.now()
    const error = await rejection(r.resilience.chat(newExchange(), chatRequest('m-1'), { signal }))
    const elapsed = performance.now() - started
    expect(error).toMatchObject({ status: 504, code: 'upstream_timeout' })
    expect(elapsed).toBeLessThan(300 + 200)
    expect((error as ApiError).headers['x-tollgate-attempts']).toBe('2')
    await waitFor(() => sim.stats.aborted === 1, 3000, 'the simulator to see the abort')
  })
})
