/**
 * Breakers shared through Redis: two gateway instances (two breaker services, each with its
 * own connection) on one private redis-server. Failures one sees open the breaker for both
 * within the refresh interval; a reset on one closes it for both; a probe slot is one for
 * all. Then Redis is killed: each instance goes on with its own breakers and nothing waits.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import { recordScript } from '../plugins/breaker/scripts'
import { ApiError } from '../plugins/exchange'
import { RedisStore } from '../plugins/store'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { type RedisServer, startRedisServer, testKeyPrefix, waitFor } from './support/redis'
import { startRedisProxy } from './support/redis-proxy'
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
let redis: RedisServer
let clock: FakeClock
let stores: RedisStore[] = []
let rigs: Rig[] = []
const target = 'up:sim-1'
const signal = new AbortController().signal

beforeAll(async () => {
  ;[sim, redis] = await Promise.all([startSimServer(), startRedisServer()])
})
afterAll(async () => {
  await sim.stop()
  await redis.kill()
})
beforeEach(() => {
  sim.reset()
  clock = fakeClock()
})
afterEach(async () => {
  await Promise.all(rigs.map((r) => r.close()))
  await Promise.all(stores.map((store) => store.close()))
  rigs = []
  stores = []
})

/** One gateway instance's breakers: its own Redis connection, the shared key space. */
async function instance(
  name: string,
  syncIntervalMs = 0,
  { url = redis.url, breaker = {} }: { url?: string; breaker?: Record<string, unknown> } = {},
): Promise<Rig> {
  const store = new RedisStore({ url, keyPrefix: testKeyPrefix(name), commandTimeoutMs: 200 })
  expect(await store.waitUntilAvailable(2000)).toBe(true)
  stores.push(store)
  const r = rig({
    clock,
    store,
    syncIntervalMs,
    file: {
      providers: { up: { type: 'openai', base_url: sim.url } },
      models: { 'm-1': { provider: 'up', upstream_model: 'sim-1', pricing: { input: 1, output: 2 } } },
      breaker: { retries: { max_retries: 0 }, ...breaker },
    },
  })
  rigs.push(r)
  return r
}

const chat = (r: Rig) => r.resilience.chat(newExchange(), chatRequest('m-1'), { signal })

async function failFiveTimes(r: Rig) {
  sim.addFaults([{ status: 500, times: 5 }])
  for (let i = 0; i < 5; i++) await rejection(chat(r))
}

describe('shared breakers', () => {
  test('failures seen by one instance open the breaker for both', async () => {
    const prefix = `shared-open-${crypto.randomUUID()}`
    const [a, b] = [await instance(prefix), await instance(prefix)]
    expect(a.breakers.shared).toBe(true)
    await failFiveTimes(a)
    expect(a.breakers.view(target).state).toBe('open')
    expect(b.breakers.view(target).state).toBe('closed')
    await waitFor(
      async () => {
        await b.breakers.refresh()
        return b.breakers.view(target).state === 'open'
      },
      1000,
      'instance b to see the open breaker',
    )
    const requests = sim.stats.requests
    expect(await rejection(chat(b))).toMatchObject({ status: 503, code: 'upstream_unavailable' })
    expect(sim.stats.requests).toBe(requests)
    expect(b.breakers.view(target).nextProbeAt).toBe(a.breakers.view(target).nextProbeAt)
  })

  test('the background refresh brings the state within a second, and failures add up across instances', async () => {
    const prefix = `shared-sum-${crypto.randomUUID()}`
    const [a, b] = [await instance(prefix, 200), await instance(prefix, 200)]
    sim.addFaults([{ status: 500, times: 4 }])
    for (const r of [a, b, a, b]) await rejection(chat(r))
    expect(a.breakers.view(target).state).toBe('closed')
    await waitFor(() => b.breakers.view(target).failures === 4, 1000, 'b to see every failure')
    sim.addFaults([{ status: 500 }])
    await rejection(chat(b))
    expect(b.breakers.view(target).state).toBe('open')
    await waitFor(() => a.breakers.view(target).state === 'open', 1000, 'a to see the open breaker')
  })

  test('one probe at a time across instances, and a reset on one closes it for both', async () => {
    const prefix = `shared-probe-${crypto.randomUUID()}`
    const [a, b] = [await instance(prefix), await instance(prefix)]
    await failFiveTimes(a)
    await b.breakers.refresh()
    clock.advance(30_000)
    sim.addFaults([{ stall_ms: 100 }])
    const before = sim.stats.requests
    const probe = chat(a)
    // a's probe reached the upstream: it holds the shared slot.
    await waitFor(() => sim.stats.requests === before + 1, 2000, "a's probe to reach the upstream")
    const requests = sim.stats.requests
    const refused = await rejection(chat(b))
    expect(refused).toMatchObject({ status: 503 })
    expect((refused as ApiError).headers['retry-after']).toBe('1')
    expect(sim.stats.requests).toBe(requests)
    await probe

    expect(await a.breakers.reset(target)).toBe(true)
    await b.breakers.refresh()
    expect(b.breakers.view(target)).toMatchObject({ state: 'closed', failures: 0 })
  })

  test('answers Redis runs out of order (after a restart emptied its script cache) never undo local writes', async () => {
    await redis.restart()
    const prefix = `shared-order-${crypto.randomUUID()}`
    const [a, b] = [await instance(prefix), await instance(prefix)]
    // Only the read script is in Redis's cache now: every write's EVALSHA is refused and
    // retried as EVAL, so a read sent after the writes runs before them.
    await b.breakers.refresh()
    for (let i = 0; i < 5; i++) a.breakers.record(target, 'f', false, 'http 500')
    const refreshed = a.breakers.refresh()
    expect(a.breakers.view(target).state).toBe('open')
    await refreshed
    expect(a.breakers.view(target).state).toBe('open')
    await waitFor(
      async () => {
        await b.breakers.refresh()
        return b.breakers.view(target).failures === 5
      },
      1000,
      'Redis to hold all five failures',
    )
    expect(b.breakers.view(target).state).toBe('open')
  })

  test('successes of a closed breaker reach Redis in one batch, and the failure rate every instance sees counts them', async () => {
    const prefix = `shared-batch-${crypto.randomUUID()}`
    const proxy = startRedisProxy(redis.port)
    try {
      // The rate rule alone: it opens at half the window's calls failed, once it holds 10.
      const breaker = { failure_threshold: 0, failure_rate: 0.5, minimum_calls: 10 }
      const a = await instance(prefix, 0, { url: `redis://127.0.0.1:${proxy.port}`, breaker })
      const b = await instance(prefix, 0, { breaker })
      const records = () =>
        proxy.writes
          .map((write) => write.filter((command) => command[1] === recordScript.sha1))
          .filter((w) => w.length > 0)
      proxy.writes.length = 0
      for (let i = 0; i < 6; i++) await chat(a)
      // Six upstream calls, and not one breaker write on their way.
      expect(records()).toEqual([])
      await a.breakers.refresh()
      // The sync sends them as one script call: outcome n (no call of its own), batched 6.
      expect(records().map((write) => write.map((command) => [command[5], command[17]]))).toEqual([
        [['n', '6']],
      ])
      await b.breakers.refresh()
      expect(b.breakers.view(target)).toMatchObject({ state: 'closed', calls: 6, failures: 0 })

      // Four more successes are still batched when a fails: the failure carries them.
      for (let i = 0; i < 4; i++) await chat(a)
      sim.addFaults([{ status: 500 }])
      await rejection(chat(a))
      await waitFor(
        async () => {
          await b.breakers.refresh()
          return b.breakers.view(target).failures === 1
        },
        1000,
        "b to see a's failure",
      )
      expect(b.breakers.view(target)).toMatchObject({ state: 'closed', calls: 11, failures: 1 })

      // b's failures are judged in Redis against a's successes: 9 of 19 stays closed, 10 of 20 opens.
      sim.addFaults([{ status: 500, times: 9 }])
      for (let i = 0; i < 8; i++) await rejection(chat(b))
      expect(b.breakers.view(target)).toMatchObject({ state: 'closed', calls: 19, failures: 9 })
      await rejection(chat(b))
      expect(b.breakers.view(target).state).toBe('open')
      await waitFor(
        async () => {
          await a.breakers.refresh()
          return a.breakers.view(target).state === 'open'
        },
        1000,
        'a to see the breaker b opened',
      )
      expect(a.breakers.view(target)).toMatchObject({ calls: 20, failures: 10 })
    } finally {
      proxy.stop()
    }
  })

  test('Redis killed: each instance keeps its own breakers working, and no call waits', async () => {
    const prefix = `shared-down-${crypto.randomUUID()}`
    const [a, b] = [await instance(prefix, 100), await instance(prefix, 100)]
    await redis.kill()
    const started = performance.now()
    await failFiveTimes(a)
    expect(a.breakers.view(target).state).toBe('open')
    const rejected = await rejection(chat(a))
    expect(rejected).toBeInstanceOf(ApiError)
    expect(await chat(b)).toMatchObject({ stale: false })
    expect(b.breakers.view(target).state).toBe('closed')
    clock.advance(30_000)
    await chat(a)
    await chat(a)
    expect(a.breakers.view(target).state).toBe('closed')
    expect(performance.now() - started).toBeLessThan(1000)
    expect(stores.every((store) => !store.available)).toBe(true)
    await redis.restart()
  })
  test('Redis hung (paused): calls never wait on it beyond one command timeout', async () => {
    const prefix = `shared-hung-${crypto.randomUUID()}`
    const a = await instance(prefix, 100)
    redis.pause()
    try {
      const started = performance.now()
      await failFiveTimes(a)
      expect(await rejection(chat(a))).toMatchObject({ status: 503 })
      expect(performance.now() - started).toBeLessThan(150)
      clock.advance(30_000)
      await chat(a)
      await chat(a)
      expect(a.breakers.view(target).state).toBe('closed')
      // At most the first probe's slot request waits, for the store's 200 ms command timeout.
      expect(performance.now() - started).toBeLessThan(200 + 400)
    } finally {
      redis.resume()
    }
  })
})
