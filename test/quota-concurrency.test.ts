/**
 * Concurrency leases through the HTTP surface: a lease is held while the answer is in
 * flight and released when the exchange settles: on success, on an upstream error (before
 * or during the stream), when the client goes away mid-stream, and, when the instance
 * holding it is SIGKILLed and can settle nothing, by its own expiry.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { requirePostgres } from './support/db'
import { eventually, type Gateway, startGateway } from './support/gateway'
import { startGatewayProcess } from './support/process'
import { chat, noLimits, sharedRedisStore, storeReady, uniqueUser } from './support/quota'
import { startRedisServer, waitFor } from './support/redis'

let sim: SimServer
let gateway: Gateway

/** One config for the in-process gateways and the separate process. */
const configFile = (leaseTtlMs = 600_000) => ({
  providers: { upstream: { type: 'openai', base_url: sim.url } },
  models: { remote: { provider: 'upstream', pricing: { input: 1, output: 1 } } },
  tiers: { one: { ...noLimits, concurrent: 1 }, two: { ...noLimits, concurrent: 2 } },
  quota: { lease_ttl_ms: leaseTtlMs },
})

beforeAll(async () => {
  sim = await startSimServer({ port: 0 })
  const store = await sharedRedisStore('quota-concurrency')
  gateway = await startGateway({ env: { DATABASE_URL: await requirePostgres() }, file: configFile(), store })
})

afterAll(async () => {
  await gateway?.stop()
  await sim?.stop()
})

/** Opens a stream that the simulator holds open after its first chunk, until `close`. */
async function holdStream(base: string, key: string, headers: Record<string, string> = {}) {
  sim.addFaults([{ stall_after_chunks: { chunks: 1, ms: 20_000 } }])
  const controller = new AbortController()
  const response = await chat(base, key, {
    model: 'remote',
    stream: true,
    signal: controller.signal,
    headers,
  })
  expect(response.status).toBe(200)
  const reader = response.body!.getReader()
  const first = await reader.read()
  expect(new TextDecoder().decode(first.value)).toStartWith('data: ')
  return { close: () => controller.abort() }
}

async function activeLeases(key: string): Promise<number> {
  const response = await fetch(`${gateway.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })
  return ((await response.json()) as { concurrent: { active: number } }).concurrent.active
}

/** Polls until the user holds no lease: settlement is off the response path. */
async function leasesFreed(key: string): Promise<void> {
  await waitFor(async () => (await activeLeases(key)) === 0, 3000, 'the lease to be released')
}

async function expectConcurrencyDenial(base: string, key: string, limit: number, tier: string) {
  const response = await chat(base, key, { model: 'remote' })
  expect(response.status).toBe(429)
  expect(response.headers.get('retry-after')).toBe('1')
  const { error } = (await response.json()) as { error: { code: string; message: string } }
  expect(error.code).toBe('rate_limit_exceeded')
  expect(error.message).toBe(`Rate limit exceeded: ${limit} concurrent requests for tier ${tier}.`)
}

describe('concurrency leases', () => {
  test('released on success', async () => {
    const key = await gateway.createKey(uniqueUser('ok'), 'one')
    for (let i = 0; i < 3; i++) {
      expect((await chat(gateway.url, key, { model: 'remote' })).status).toBe(200)
      await leasesFreed(key)
    }
  })

  test('held while a stream is open, released when the client disconnects mid-stream', async () => {
    const key = await gateway.createKey(uniqueUser('gone'), 'one')
    const aborted = sim.stats.aborted
    const stream = await holdStream(gateway.url, key)
    expect(await activeLeases(key)).toBe(1)
    await expectConcurrencyDenial(gateway.url, key, 1, 'one')
    stream.close()
    await leasesFreed(key)
    await eventually(() => sim.stats.aborted === aborted + 1)
    expect((await chat(gateway.url, key, { model: 'remote' })).status).toBe(200)
  })

  test('released on an upstream error, before the first byte and mid-stream', async () => {
    const key = await gateway.createKey(uniqueUser('err'), 'one')
    sim.addFaults([{ status: 500 }])
    expect((await chat(gateway.url, key, { model: 'remote' })).status).toBe(503)
    await leasesFreed(key)
    sim.addFaults([{ fail_after_chunks: 2 }])
    const cut = await chat(gateway.url, key, { model: 'remote', stream: true })
    expect(await cut.text()).toContain('"error"')
    await leasesFreed(key)
    expect((await chat(gateway.url, key, { model: 'remote' })).status).toBe(200)
  })

  test('a repeated x-request-id cannot share one lease between two requests', async () => {
    const key = await gateway.createKey(uniqueUser('same-id'), 'two')
    const headers = { 'x-request-id': 'client-chosen-request-id' }
    const streams = [await holdStream(gateway.url, key, headers), await holdStream(gateway.url, key, headers)]
    expect(await activeLeases(key)).toBe(2)
    await expectConcurrencyDenial(gateway.url, key, 2, 'two')
    const cancelled = () => gateway.settled.filter((exchange) => exchange.settlement?.outcome === 'cancelled')
    const before = cancelled().length
    streams[0]!.close()
    await eventually(() => cancelled().length > before)
    // The first to settle frees its own lease only.
    expect(await activeLeases(key)).toBe(1)
    streams[1]!.close()
    await leasesFreed(key)
  })
})

test('a SIGKILLed instance cannot settle: its lease frees itself at quota.lease_ttl_ms', async () => {
  const redis = await startRedisServer()
  const databaseUrl = await requirePostgres()
  // One key prefix for both, so the survivor sees the lease the doomed process took.
  const env = { REDIS_URL: redis.url, DATABASE_URL: databaseUrl, REDIS_KEY_PREFIX: 'tg:' }
  const [doomed, survivor] = await Promise.all([
    startGatewayProcess({ env, file: configFile(1500) }),
    startGateway({ env, file: configFile() }),
  ])
  try {
    await storeReady(survivor.runtime.store)
    const key = await survivor.createKey(uniqueUser('killed'), 'one')
    const stream = await holdStream(doomed.url, key)
    const leasedAt = performance.now()
    await expectConcurrencyDenial(survivor.url, key, 1, 'one')
    await doomed.kill()
    stream.close()
    // Nobody settles the lease now; only its expiry (Redis' clock) can free it.
    await expectConcurrencyDenial(survivor.url, key, 1, 'one')
    let status = 429
    while (status === 429 && performance.now() - leasedAt < 6000) {
      await Bun.sleep(50)
      status = (await chat(survivor.url, key, { model: 'remote' })).status
    }
    const freedAfter = performance.now() - leasedAt
    expect(status).toBe(200)
    expect(freedAfter).toBeGreaterThan(1400)
    // Freed by expiry, not earlier; the upper bound only allows for a loaded machine.
    expect(freedAfter).toBeLessThan(4000)
  } finally {
    await Promise.allSettled([doomed.kill(), survivor.stop()])
    await redis.kill()
  }
})
