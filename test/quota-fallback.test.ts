/**
 * Redis goes away under load. The test owns its redis-server and SIGKILLs it while requests
 * are arriving: none may answer 5xx or hang, the `local` fallback keeps enforcing the same
 * limits in-process, readiness reports degraded, and once Redis is back enforcement returns
 * to it by itself, without replaying what was counted meanwhile. `closed` answers 503 and
 * `open` admits everything.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createClient } from 'redis'
import { requirePostgres } from './support/db'
import { type Gateway, startGateway } from './support/gateway'
import { chat, countStatuses, manualClock, storeReady, uniqueUser } from './support/quota'
import { type RedisServer, startRedisServer, waitFor } from './support/redis'

const tiers = {
  fb: {
    requests_per_minute: 20,
    requests_per_hour: null,
    requests_per_day: null,
    tokens_per_day: null,
    cost_per_day_usd: null,
    concurrent: null,
  },
}
// Far above the store's 250 ms command timeout, far below a hang on a dead socket.
const requestBoundMs = 2500

let databaseUrl: string
const servers: RedisServer[] = []
const gateways: Gateway[] = []

beforeAll(async () => {
  databaseUrl = await requirePostgres()
})

afterAll(async () => {
  await Promise.allSettled(gateways.map((gateway) => gateway.stop()))
  await Promise.allSettled(servers.map((server) => server.kill()))
})

async function setup(fallback: 'local' | 'open' | 'closed') {
  const redis = await startRedisServer()
  servers.push(redis)
  const gateway = await startGateway({
    env: { REDIS_URL: redis.url, DATABASE_URL: databaseUrl, REDIS_KEY_PREFIX: 'tg:' },
    file: { tiers, quota: { fallback } },
    // Windows do not refill while the test runs, so counts are exact.
    clock: manualClock().now,
  })
  gateways.push(gateway)
  await storeReady(gateway.runtime.store)
  return { redis, gateway }
}

/** One request with a deadline; never throws, so a hung request shows up as status 0. */
async function timed(base: string, key: string) {
  const started = performance.now()
  try {
    const response = await chat(base, key, { signal: AbortSignal.timeout(5000) })
    await response.text()
    return {
      status: response.status,
      ms: performance.now() - started,
      retryAfter: response.headers.get('retry-after'),
    }
  } catch {
    return { status: 0, ms: performance.now() - started, retryAfter: null }
  }
}

async function readiness(base: string) {
  const response = await fetch(`${base}/health/ready`)
  return {
    code: response.status,
    ...((await response.json()) as { status: string; components: Record<string, { status: string }> }),
  }
}

describe('quota fallback', () => {
  test('local: Redis killed mid-load, then restarted', async () => {
    const { redis, gateway } = await setup('local')
    const loadUser = uniqueUser('load')
    const loadKey = await gateway.createKey(loadUser, 'fb')

    // 60 requests arriving 5 ms apart; Redis dies after the 15th has been sent.
    const inFlight: Array<ReturnType<typeof timed>> = []
    let killed: Promise<void> = Promise.resolve()
    for (let i = 0; i < 60; i++) {
      if (i === 15) killed = redis.kill()
      inFlight.push(timed(gateway.url, loadKey))
      await Bun.sleep(5)
    }
    await killed
    const load = await Promise.all(inFlight)
    expect(load.filter((result) => result.status !== 200 && result.status !== 429)).toEqual([])
    expect(Math.max(...load.map((result) => result.ms))).toBeLessThan(requestBoundMs)
    // At most 20 on Redis before it died and 20 in-process after: the rest were denied.
    const admitted = countStatuses(load)[200] ?? 0
    expect(admitted).toBeGreaterThanOrEqual(20)
    expect(admitted).toBeLessThanOrEqual(40)

    // While Redis is down the same limit holds, exactly, in-process.
    const downUser = uniqueUser('down')
    const downKey = await gateway.createKey(downUser, 'fb')
    const down = []
    for (let i = 0; i < 25; i++) down.push(await timed(gateway.url, downKey))
    expect(countStatuses(down)).toEqual({ 200: 20, 429: 5 })
    expect(down.at(-1)!.retryAfter).toBe('3')
    expect(Math.max(...down.map((result) => result.ms))).toBeLessThan(requestBoundMs)

    const degraded = await readiness(gateway.url)
    expect(degraded.code).toBe(200)
    expect(degraded.status).toBe('degraded')
    expect(degraded.components.redis?.status).toBe('degraded')

    await redis.restart()
    await waitFor(async () => (await readiness(gateway.url)).status === 'healthy', 5000, 'readiness healthy')
    const backUser = uniqueUser('back')
    const backKey = await gateway.createKey(backUser, 'fb')
    expect((await timed(gateway.url, backKey)).status).toBe(200)

    const client = createClient({ url: redis.url })
    await client.connect()
    try {
      // The decision was made on Redis again, and nothing counted meanwhile was replayed there.
      expect(await client.hGet(`tg:{u:${backUser}}:q`, 'tat:60000')).not.toBeNull()
      expect(await client.exists(`tg:{u:${downUser}}:q`)).toBe(0)
    } finally {
      client.destroy()
    }
  })

  test('closed: answers 503 with Retry-After while Redis is down, at once', async () => {
    const { redis, gateway } = await setup('closed')
    const key = await gateway.createKey(uniqueUser('closed'), 'fb')
    expect((await timed(gateway.url, key)).status).toBe(200)
    await redis.kill()
    // The first request finds the dead socket, the next ones a store known to be down.
    for (let i = 0; i < 3; i++) {
      const response = await chat(gateway.url, key)
      expect(response.status).toBe(503)
      expect(response.headers.get('retry-after')).toBe('1')
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('quota_unavailable')
    }
  })

  test('open: admits everything while Redis is down', async () => {
    const { redis, gateway } = await setup('open')
    await redis.kill()
    const key = await gateway.createKey(uniqueUser('open'), 'fb')
    const results = []
    for (let i = 0; i < 30; i++) results.push(await timed(gateway.url, key))
    expect(countStatuses(results)).toEqual({ 200: 30 })
    expect(Math.max(...results.map((result) => result.ms))).toBeLessThan(requestBoundMs)
  })
})
