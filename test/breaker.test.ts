/**
 * The breaker state machine and the guard's retries, end to end: the resilience layer with a
 * real OpenAIProvider over HTTP to the simulator server, scripted faults, and a clock the
 * tests move, so cool-downs and Retry-After waits are exact and instant.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import { ApiError } from '../plugins/exchange'
import { UpstreamError } from '../src/upstream/provider'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { waitFor } from './support/redis'
import {
  chatRequest,
  type FakeClock,
  fakeClock,
  newExchange,
  type Rig,
  rejection,
  rig,
} from './support/resilience'

let sim: SimServer
let clock: FakeClock
let current: Rig | undefined
const target = 'up:sim-1'
const signal = new AbortController().signal

beforeAll(async () => {
  sim = await startSimServer()
})
afterAll(() => sim.stop())
beforeEach(() => {
  sim.reset()
  clock = fakeClock()
})
afterEach(() => current?.close())

function setup(breaker: Record<string, unknown> = {}): Rig {
  current = rig({
    clock,
    file: {
      providers: { up: { type: 'openai', base_url: sim.url } },
      models: { 'm-1': { provider: 'up', upstream_model: 'sim-1', pricing: { input: 1, output: 2 } } },
      breaker,
    },
  })
  return current
}

const chat = (r: Rig) => r.resilience.chat(newExchange(), chatRequest('m-1'), { signal })

async function failWith500s(r: Rig, count: number) {
  sim.addFaults([{ status: 500, times: count }])
  for (let i = 0; i < count; i++) expect(await rejection(chat(r))).toBeInstanceOf(ApiError)
}

describe('breaker state machine', () => {
  test('five consecutive 500s open it; the sixth call is refused in under 5 ms without an upstream call', async () => {
    const r = setup({ retries: { max_retries: 0 } })
    await failWith500s(r, 4)
    expect(r.breakers.view(target).state).toBe('closed')
    await failWith500s(r, 1)
    const view = r.breakers.view(target)
    expect(view).toMatchObject({ state: 'open', failures: 5, calls: 5, lastFailure: 'http 500' })
    expect(view.nextProbeAt).toBe(clock.now() + 30_000)
    expect(sim.stats.chat).toBe(5)

    const started = performance.now()
    const error = await rejection(chat(r))
    const elapsed = performance.now() - started
    expect(elapsed).toBeLessThan(5)
    expect(sim.stats.requests).toBe(5)
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({ status: 503, code: 'upstream_unavailable' })
    expect((error as ApiError).headers['retry-after']).toBe('30')
    expect((error as ApiError).headers['x-tollgate-attempts']).toBe('0')
    expect(r.breakers.stats().rejections[target]).toBe(1)
  })

  test('after the cool-down one probe goes through at a time; two successes close it', async () => {
    const r = setup({ retries: { max_retries: 0 } })
    await failWith500s(r, 5)
    clock.advance(29_999)
    expect(await rejection(chat(r))).toMatchObject({ status: 503 })
    clock.advance(1)

    sim.addFaults([{ stall_ms: 100 }])
    const probe = chat(r)
    await waitFor(() => r.breakers.view(target).probesInFlight === 1, 2000, 'the probe to hold its slot')
    expect(r.breakers.view(target)).toMatchObject({ state: 'half_open', probesInFlight: 1 })
    const refused = await rejection(chat(r))
    expect(refused).toMatchObject({ status: 503, code: 'upstream_unavailable' })
    // The probe's outcome is near: come back in a second, not when its slot lease runs out.
    expect((refused as ApiError).headers['retry-after']).toBe('1')
    expect((await probe).stale).toBe(false)
    expect(r.breakers.view(target)).toMatchObject({
      state: 'half_open',
      halfOpenSuccesses: 1,
      probesInFlight: 0,
    })

    await chat(r)
    expect(r.breakers.view(target)).toMatchObject({ state: 'closed', failures: 0, calls: 0 })
    expect(sim.stats.chat).toBe(7)
    expect(r.breakers.stats().transitions[target]).toEqual({ open: 1, half_open: 1, closed: 1 })
  })

  test('a failed probe reopens it with the cool-down doubled, up to the cap', async () => {
    const r = setup({ retries: { max_retries: 0 }, max_cooldown_ms: 100_000 })
    await failWith500s(r, 5)
    for (const cooldown of [60_000, 100_000, 100_000]) {
      clock.advance(r.breakers.view(target).nextProbeAt! - clock.now())
      sim.addFaults([{ status: 503 }])
      expect(await rejection(chat(r))).toMatchObject({ status: 503 })
      expect(r.breakers.view(target)).toMatchObject({ state: 'open', cooldownMs: cooldown })
      expect(r.breakers.view(target).nextProbeAt).toBe(clock.now() + cooldown)
    }
    clock.advance(99_999)
    const before = sim.stats.chat
    expect(await rejection(chat(r))).toMatchObject({ status: 503 })
    expect(sim.stats.chat).toBe(before)
  })

  test('the rate rule opens it at 50 % failures once the window holds 10 calls', async () => {
    const r = setup({ retries: { max_retries: 0 }, failure_threshold: 0 })
    for (let i = 0; i < 5; i++) await chat(r)
    await failWith500s(r, 4)
    expect(r.breakers.view(target)).toMatchObject({ state: 'closed', calls: 9, failures: 4 })
    await failWith500s(r, 1)
    expect(r.breakers.view(target)).toMatchObject({ state: 'open', calls: 10, failures: 5 })
  })

  test('failures age out of the rolling window', async () => {
    const r = setup({ retries: { max_retries: 0 } })
    await failWith500s(r, 4)
    clock.advance(60_000)
    expect(r.breakers.view(target)).toMatchObject({ failures: 0, calls: 0 })
    await failWith500s(r, 1)
    expect(r.breakers.view(target).state).toBe('closed')
  })

  test('4xx other than 429 and client aborts never count as failures; 429 does', async () => {
    const r = setup({ retries: { max_retries: 0 }, failure_threshold: 2 })
    sim.addFaults([{ status: 400, times: 3 }, { status: 404 }])
    for (let i = 0; i < 4; i++) expect(await rejection(chat(r))).toBeInstanceOf(UpstreamError)
    sim.addFaults([{ stall_ms: 500 }])
    const client = new AbortController()
    const aborted = r.resilience.chat(newExchange(), chatRequest('m-1'), { signal: client.signal })
    setTimeout(() => client.abort(), 20)
    expect(await rejection(aborted)).toMatchObject({ kind: 'aborted' })
    expect(r.breakers.view(target)).toMatchObject({ state: 'closed', failures: 0, calls: 4 })
    sim.addFaults([{ status: 429, times: 2 }])
    await rejection(chat(r))
    await rejection(chat(r))
    expect(r.breakers.view(target)).toMatchObject({ state: 'open', lastFailure: 'http 429' })
  })
})

describe('retries', () => {
  test('a 503 then a 200 succeeds with 2 attempts after a full-jitter backoff', async () => {
    const r = setup({ retries: { max_retries: 2, backoff_base_ms: 200 } })
    sim.addFaults([{ status: 503 }])
    const exchange = newExchange()
    const answer = await r.resilience.chat(exchange, chatRequest('m-1'), { signal })
    expect(answer.headers).toEqual({
      'x-tollgate-model': 'm-1',
      'x-tollgate-fallback': '0',
      'x-tollgate-attempts': '2',
    })
    expect(exchange.attempts).toBe(2)
    expect(sim.stats.chat).toBe(2)
    // random() is 0.5 in the rig: half of base * 2^0.
    expect(clock.sleeps).toEqual([100])
    expect(r.breakers.stats().retries[target]).toBe(1)
  })

  test('backoff doubles per retry up to its cap', async () => {
    const r = setup({ retries: { max_retries: 4, backoff_base_ms: 100, backoff_cap_ms: 300 } })
    sim.addFaults([{ status: 502, times: 4 }])
    await chat(r)
    expect(clock.sleeps).toEqual([50, 100, 150, 150])
  })

  test('a 400 is never retried', async () => {
    const r = setup({ retries: { max_retries: 2 } })
    sim.addFaults([{ status: 400, times: 3 }])
    const error = await rejection(chat(r))
    expect(error).toBeInstanceOf(UpstreamError)
    expect(error).toMatchObject({ status: 400 })
    expect(sim.stats.chat).toBe(1)
    expect(clock.sleeps).toEqual([])
  })

  test("the upstream's Retry-After is honoured; one beyond the cap ends the attempts", async () => {
    const r = setup({ retries: { max_retries: 2, retry_after_cap_ms: 5_000 } })
    sim.addFaults([{ status: 503, retry_after: 2 }])
    const answer = await chat(r)
    expect(answer.headers['x-tollgate-attempts']).toBe('2')
    expect(clock.sleeps).toEqual([2_000])

    sim.addFaults([{ status: 429, retry_after: 10 }])
    const error = await rejection(chat(r))
    expect(error).toMatchObject({ status: 503, code: 'upstream_unavailable' })
    expect(sim.stats.chat).toBe(3)
    expect(clock.sleeps).toEqual([2_000])
  })

  test('retries stop when the breaker opens on the way', async () => {
    const r = setup({ retries: { max_retries: 5 }, failure_threshold: 2 })
    sim.addFaults([{ status: 500, times: 5 }])
    const error = await rejection(chat(r))
    expect(error).toMatchObject({ status: 503 })
    expect((error as ApiError).headers['x-tollgate-attempts']).toBe('2')
    expect(sim.stats.chat).toBe(2)
  })
})
