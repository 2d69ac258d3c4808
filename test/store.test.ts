/**
 * The store seam's contract, checked the same way on every backend: memory, one Redis and a
 * Redis Cluster. Plugins are written and tested against memory; these tests are what makes
 * that safe on Redis. Then the failure modes that matter for a gateway: a killed Redis, a
 * hung Redis, a Redis that never was, each answered quickly with StoreUnavailableError.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createClient } from 'redis'
import {
  createStore,
  defineStoreScript,
  MemoryStore,
  RedisStore,
  type Store,
  StoreUnavailableError,
} from '../plugins/store'
import {
  type RedisCluster,
  type RedisServer,
  requireRedis,
  startRedisCluster,
  startRedisServer,
  testKeyPrefix,
  waitFor,
} from './support/redis'

/** Admits while the counter is below the limit; the window starts with the first hit. */
const incrBelow = defineStoreScript<[number, number]>({
  name: 'test.incr_below',
  numberOfKeys: 1,
  lua: `
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= tonumber(ARGV[1]) then return {0, current} end
local next = redis.call('INCR', KEYS[1])
if next == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, next}`,
  runInMemory(data, [key], [limit, ttlMs]) {
    const current = Number(data.get<number>(key!) ?? 0)
    if (current >= Number(limit)) return [0, current]
    const next = current + 1
    data.update(key!, next)
    if (next === 1) data.expire(key!, Number(ttlMs))
    return [1, next]
  },
})

/** Two keys of one user (one hash tag) in one step; the reply mixes numbers, strings, nesting. */
const pairAdd = defineStoreScript({
  name: 'test.pair_add',
  numberOfKeys: 2,
  lua: `
local a = redis.call('INCRBY', KEYS[1], ARGV[1])
local b = redis.call('INCRBY', KEYS[2], ARGV[2])
return {a + b, ARGV[3], {a, b}}`,
  runInMemory(data, [keyA, keyB], [addA, addB, label]) {
    const a = Number(data.get<number>(keyA!) ?? 0) + Number(addA)
    const b = Number(data.get<number>(keyB!) ?? 0) + Number(addB)
    data.update(keyA!, a)
    data.update(keyB!, b)
    return [a + b, label!, [a, b]]
  },
})

const allBytes = Uint8Array.from({ length: 256 }, (_, i) => i)
const text = (bytes: Uint8Array | null) => (bytes === null ? null : new TextDecoder().decode(bytes))

let redisUrl = ''
let cluster: RedisCluster | undefined
const opened: Store[] = []

beforeAll(async () => {
  redisUrl = await requireRedis()
})

afterAll(async () => {
  await Promise.all(opened.map((store) => store.close()))
  await cluster?.stop()
})

async function redisStore(options: ConstructorParameters<typeof RedisStore>[0]): Promise<RedisStore> {
  const store = new RedisStore(options)
  opened.push(store)
  expect(await store.waitUntilAvailable(5_000)).toBe(true)
  return store
}

const backends: [string, () => Promise<Store>][] = [
  ['memory', async () => new MemoryStore({ sweepIntervalMs: 0 })],
  ['redis', () => redisStore({ url: redisUrl, keyPrefix: testKeyPrefix('behaviour') })],
  [
    'redis cluster',
    async () => {
      cluster = await startRedisCluster()
      return redisStore({ clusterNodes: cluster.nodes.split(','), keyPrefix: testKeyPrefix('cluster') })
    },
  ],
]

for (const [name, open] of backends) {
  describe(`store behaviour: ${name}`, () => {
    let store: Store
    beforeAll(async () => {
      store = await open()
    }, 15_000)

    test('get/set round-trips every byte value, and strings as UTF-8', async () => {
      expect(await store.get('missing')).toBeNull()
      await store.set('bytes', allBytes, 0)
      expect(await store.get('bytes')).toEqual(allBytes)
      await store.set('text', 'héllo {u:x} ✓', 0)
      expect(text(await store.get('text'))).toBe('héllo {u:x} ✓')
      await store.set('empty', new Uint8Array(0), 0)
      expect(await store.get('empty')).toEqual(new Uint8Array(0))
    })

    test('a ttl expires the value; a set without ttl removes the expiry', async () => {
      await store.set('short', 'x', 60)
      await store.set('kept', 'y', 60)
      await store.set('kept', 'z', 0)
      expect(text(await store.get('short'))).toBe('x')
      await Bun.sleep(120)
      expect(await store.get('short')).toBeNull()
      expect(text(await store.get('kept'))).toBe('z')
    })

    test('del counts only keys that existed', async () => {
      await store.set('d1', '1', 0)
      await store.set('d2', '2', 0)
      await store.set('d3', '3', 30)
      await Bun.sleep(60)
      expect(await store.del('d1', 'd2', 'd3', 'never')).toBe(2)
      expect(await store.get('d1')).toBeNull()
      expect(await store.del()).toBe(0)
    })

    test('incr counts from zero, keeps an existing expiry, and refuses non-integers', async () => {
      expect(await store.incr('n')).toBe(1)
      expect(await store.incr('n')).toBe(2)
      expect(text(await store.get('n'))).toBe('2')
      await store.set('windowed', '41', 80)
      expect(await store.incr('windowed')).toBe(42)
      await Bun.sleep(150)
      expect(await store.get('windowed')).toBeNull()
      await store.set('word', 'abc', 0)
      await expect(store.incr('word')).rejects.toThrow(/not an integer/)
    })

    test('a script gives the same answers as its in-memory twin', async () => {
      const results = []
      for (let i = 0; i < 4; i++) results.push(await store.run(incrBelow, ['{u:alice}:rpm'], [3, 60_000]))
      expect(results).toEqual([
        [1, 1],
        [1, 2],
        [1, 3],
        [0, 3],
      ])
      // Issued in one tick: they pipeline, and the script's atomicity keeps the count exact.
      const burst = await Promise.all(
        Array.from({ length: 20 }, () => store.run(incrBelow, ['{u:bob}:rpm'], [5, 60_000])),
      )
      expect(burst.filter(([admitted]) => admitted === 1)).toHaveLength(5)
      expect(await store.run(pairAdd, ['{u:alice}:a', '{u:alice}:b'], [2, 5, 'ok'])).toEqual([
        7,
        'ok',
        [2, 5],
      ])
      expect(await store.run(pairAdd, ['{u:alice}:a', '{u:alice}:b'], [1, 1, 'again'])).toEqual([
        9,
        'again',
        [3, 6],
      ])
      await expect(store.run(incrBelow, ['a', 'b'], [1, 1])).rejects.toThrow(/takes 1 keys/)
    })

    test('ping answers a round-trip time', async () => {
      const ms = await store.ping()
      expect(ms).toBeGreaterThanOrEqual(0)
      expect(ms).toBeLessThan(250)
    })
  })
}

describe('redis specifics', () => {
  test('keys carry the prefix, and a flushed script cache falls back from EVALSHA to EVAL', async () => {
    const prefix = testKeyPrefix('specifics')
    const store = await redisStore({ url: redisUrl, keyPrefix: prefix })
    const raw = createClient({ url: redisUrl })
    await raw.connect()
    try {
      await store.set('seen', 'raw', 0)
      expect(await raw.get(`${prefix}seen`)).toBe('raw')
      await raw.scriptFlush()
      expect(await store.run(incrBelow, ['{u:carol}:rpm'], [1, 60_000])).toEqual([1, 1])
      expect(await raw.pTTL(`${prefix}{u:carol}:rpm`)).toBeGreaterThan(59_000)
      await raw.del([`${prefix}seen`, `${prefix}{u:carol}:rpm`])
    } finally {
      raw.destroy()
    }
  })

  test("a command arms no timer of node-redis' own: the store's deadline is the only one", async () => {
    const store = await redisStore({ url: redisUrl, keyPrefix: testKeyPrefix('one-deadline') })
    const timeout = AbortSignal.timeout
    let armed = 0
    AbortSignal.timeout = (ms) => {
      armed++
      return timeout.call(AbortSignal, ms)
    }
    try {
      await Promise.all([store.set('k', 'v', 1000), store.get('k'), store.incr('n'), store.ping()])
      await store.run(incrBelow, ['{u:alice}:rpm'], [10, 60_000])
    } finally {
      AbortSignal.timeout = timeout
    }
    expect(armed).toBe(0)
  })

  test('an event loop stalled past the timeout: commands answered once it turns still count, the store stays up', async () => {
    const store = await redisStore({ url: redisUrl, keyPrefix: testKeyPrefix('stall'), commandTimeoutMs: 50 })
    const replies = Array.from({ length: 20 }, (_, i) => store.incr(`stalled-${i}`))
    // A busy gateway: the loop does not turn for four timeouts, so the commands are written
    // (and answered) only once it does, after their deadline's timer is already due.
    const until = performance.now() + 200
    while (performance.now() < until) {}
    expect(await Promise.all(replies)).toEqual(Array.from({ length: 20 }, () => 1))
    expect(store.available).toBe(true)
  })

  test('createStore picks the backend from its options', async () => {
    const memory = createStore({})
    expect(memory.kind).toBe('memory')
    const single = createStore({ url: redisUrl, clusterNodes: [] })
    expect(single).toBeInstanceOf(RedisStore)
    expect((single as RedisStore).mode).toBe('single')
    await Promise.all([memory.close(), single.close()])
  })

  test('on a cluster, keys of one hash tag share a script; keys of two tags are refused', async () => {
    expect(cluster).toBeDefined()
    const store = await redisStore({
      clusterNodes: cluster!.nodes.split(','),
      keyPrefix: testKeyPrefix('xslot'),
    })
    expect(store.mode).toBe('cluster')
    expect(await store.run(pairAdd, ['{u:alice}:a', '{u:alice}:b'], [1, 2, 'same'])).toEqual([
      3,
      'same',
      [1, 2],
    ])
    // A script over two users is a bug in the caller, not an outage: the reply error passes through.
    const error = await store.run(pairAdd, ['{u:alice}:a', '{u:zed}:b'], [1, 1, 'x']).catch((e: unknown) => e)
    expect(String(error)).toMatch(/CROSSSLOT|different slots/)
    expect(error).not.toBeInstanceOf(StoreUnavailableError)
    expect(store.available).toBe(true)
  })
})

/** Every Store method, each expected to reject with StoreUnavailableError in well under a second. */
async function expectEveryMethodUnavailable(store: Store): Promise<number[]> {
  const calls: (() => Promise<unknown>)[] = [
    () => store.get('k'),
    () => store.set('k', 'v', 1000),
    () => store.del('k'),
    () => store.incr('k'),
    () => store.run(incrBelow, ['{u:alice}:rpm'], [10, 60_000]),
    () => store.ping(),
  ]
  const timings: number[] = []
  for (const call of calls) {
    const started = performance.now()
    const error = await call().then(
      () => undefined,
      (e: unknown) => e,
    )
    timings.push(performance.now() - started)
    expect(error).toBeInstanceOf(StoreUnavailableError)
  }
  for (const ms of timings) expect(ms).toBeLessThan(1000)
  if (process.env.STORE_TEST_TIMINGS) console.log('unavailable rejections (ms):', timings.map(Math.round))
  return timings
}

describe('redis unavailable', () => {
  let server: RedisServer

  beforeAll(async () => {
    server = await startRedisServer()
  })

  afterAll(async () => {
    server.resume()
    await server.kill()
  })

  test('killed: every method rejects fast, state flips, and it recovers by itself on restart', async () => {
    const changes: boolean[] = []
    const store = await redisStore({
      url: server.url,
      maxReconnectDelayMs: 200,
      onStateChange: (available) => changes.push(available),
    })
    await store.set('k', 'v', 0)
    await server.kill()
    await expectEveryMethodUnavailable(store)
    expect(store.available).toBe(false)
    expect(changes).toEqual([true, false])

    await server.restart()
    await waitFor(() => store.available, 3_000, 'the store to reconnect')
    expect(changes).toEqual([true, false, true])
    expect(await store.incr('k2')).toBe(1)
    expect(await store.get('k')).toBeNull()
  })

  test('hung: commands time out instead of waiting on the open socket, and resume after', async () => {
    const store = await redisStore({ url: server.url, commandTimeoutMs: 200, maxReconnectDelayMs: 200 })
    server.pause()
    try {
      const timings = await expectEveryMethodUnavailable(store)
      // The first call waits out its deadline; later ones may fail at once once the state is down.
      expect(timings[0]).toBeGreaterThanOrEqual(150)
      expect(store.available).toBe(false)
    } finally {
      server.resume()
    }
    await waitFor(() => store.available, 3_000, 'the store to come back')
    expect(await store.incr('after-pause')).toBe(1)
  })

  test('hung: commands issued over time each reject by their own deadline, none much before it', async () => {
    const store = await redisStore({ url: server.url, commandTimeoutMs: 100, maxReconnectDelayMs: 200 })
    server.pause()
    try {
      const waits = await Promise.all(
        [0, 15, 35, 60, 80].map(async (delay) => {
          await Bun.sleep(delay)
          const started = performance.now()
          const error = await store.get(`spread-${delay}`).catch((e: unknown) => e)
          expect(error).toBeInstanceOf(StoreUnavailableError)
          return performance.now() - started
        }),
      )
      // Deadlines share one timer in slices of a tenth of the timeout: cut at most that early,
      // and late only by the timer's own lag.
      for (const ms of waits) {
        expect(ms).toBeGreaterThanOrEqual(89)
        expect(ms).toBeLessThan(100 + 40)
      }
    } finally {
      server.resume()
    }
    await waitFor(() => store.available, 3_000, 'the store to come back')
  })

  test('hung: a command that timed out before it was written is never written later', async () => {
    const prefix = testKeyPrefix('late')
    const store = await redisStore({
      url: server.url,
      keyPrefix: prefix,
      commandTimeoutMs: 100,
      maxReconnectDelayMs: 200,
    })
    server.pause()
    let resumed = false
    try {
      // A value larger than the socket's buffers: node-redis holds the INCR behind it, unwritten.
      const big = store.set('big', 'x'.repeat(32 * 1024 * 1024), 60_000).catch((e: unknown) => e)
      const late = await store.incr('late').catch((e: unknown) => e)
      expect(late).toBeInstanceOf(StoreUnavailableError)
      expect(await big).toBeInstanceOf(StoreUnavailableError)
      // The server catches up while the connection still stands: the SET lands, the INCR must not.
      server.resume()
      resumed = true
      const direct = createClient({ url: server.url })
      await direct.connect()
      try {
        await waitFor(async () => (await direct.exists(`${prefix}big`)) === 1, 3_000, 'the big SET to land')
        await Bun.sleep(100)
        expect(await direct.exists(`${prefix}late`)).toBe(0)
      } finally {
        direct.destroy()
      }
    } finally {
      if (!resumed) server.resume()
    }
  })

  test('never reachable: rejects at once, reports unavailable, and closes without hanging', async () => {
    const dead = await startRedisServer()
    await dead.kill()
    const store = createStore({ url: dead.url, connectTimeoutMs: 200 }) as RedisStore
    expect(await store.waitUntilAvailable(300)).toBe(false)
    expect(store.available).toBe(false)
    const timings = await expectEveryMethodUnavailable(store)
    for (const ms of timings) expect(ms).toBeLessThan(50)
    const started = performance.now()
    await store.close()
    expect(performance.now() - started).toBeLessThan(500)
  })

  test('close does not hang when the server stops answering under an open connection', async () => {
    const store = await redisStore({ url: server.url })
    server.pause()
    const started = performance.now()
    await store.close()
    expect(performance.now() - started).toBeLessThan(1000)
    server.resume()
  })
})
