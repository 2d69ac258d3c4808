/**
 * The plugins' off switches (`quota.enabled`, `ledger.enabled`, `cache.enabled`,
 * `breaker.enabled`): what an
 * operator turns off stops doing its work, and only that. A recording proxy between the
 * gateway and a private redis-server shows which commands a request still sends; the
 * ledger's rows are read from Postgres.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { sql } from 'drizzle-orm'
import { queryRows } from '../db/client'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { requirePostgres } from './support/db'
import { adminKey, eventually, type Gateway, startGateway } from './support/gateway'
import { chat, uniqueUser } from './support/quota'
import { type RedisServer, startRedisServer } from './support/redis'
import { type RedisProxy, startRedisProxy } from './support/redis-proxy'

let redis: RedisServer
let proxy: RedisProxy
let gateway: Gateway

const tiny = { requests_per_minute: 1, requests_per_hour: null, requests_per_day: null }

beforeAll(async () => {
  redis = await startRedisServer()
  proxy = startRedisProxy(redis.port)
  gateway = await startGateway({
    env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}`, DATABASE_URL: await requirePostgres() },
    file: {
      tiers: { tiny },
      quota: { enabled: false },
      ledger: { enabled: false, flush_interval_ms: 20 },
      cache: { enabled: false },
    },
  })
  await eventually(() => gateway.runtime.store.available, 5_000)
}, 30_000)

afterAll(async () => {
  await gateway?.stop()
  proxy?.stop()
  await redis?.kill()
})

/** Commands the requests sent, but the breaker's (keys `{b:<target>}`: its state is shared through Redis). */
function requestCommands(): string[] {
  const breakerScript = (command: string[]) => /^EVAL/i.test(command[0]!) && command[3]?.includes('{b:')
  return proxy.writes
    .flat()
    .filter((command) => !breakerScript(command))
    .map((command) => command[0]!.toUpperCase())
}

describe('quota, ledger and cache switched off', () => {
  test('a 1-per-minute tier admits every request, answers no RateLimit fields and sends no Redis command', async () => {
    const user = uniqueUser('switches')
    const key = await gateway.createKey(user, 'tiny')
    proxy.writes.length = 0
    const before = gateway.settled.length
    for (let i = 0; i < 4; i++) {
      const response = await chat(gateway.url, key, { max_tokens: 4, content: `question ${i}` })
      expect(response.status).toBe(200)
      expect(response.headers.get('ratelimit')).toBeNull()
      expect(response.headers.get('ratelimit-policy')).toBeNull()
      await response.text()
    }
    await eventually(() => gateway.settled.length === before + 4)
    expect(gateway.settled.slice(before).every((exchange) => exchange.costNanoUsd > 0n)).toBe(true)
    expect(requestCommands()).toEqual([])
  })

  test('settled requests are priced but never reach usage_events', async () => {
    const user = uniqueUser('switches-ledger')
    const key = await gateway.createKey(user, 'tiny')
    const before = gateway.settled.length
    for (let i = 0; i < 3; i++) await (await chat(gateway.url, key, { max_tokens: 4 })).text()
    await eventually(() => gateway.settled.length === before + 3)
    // Well past the flush interval: an enabled ledger would have written these by now.
    await Bun.sleep(200)
    const rows = await queryRows<{ n: string }>(
      gateway.runtime.database.db,
      sql`select count(*)::text as n from usage_events where user_id = ${user}`,
    )
    expect(rows[0]!.n).toBe('0')
  })
})

describe('the same tier with quota and ledger on', () => {
  let on: Gateway
  beforeAll(async () => {
    on = await startGateway({
      env: { REDIS_URL: redis.url, DATABASE_URL: await requirePostgres() },
      file: { tiers: { tiny }, ledger: { flush_interval_ms: 20 } },
    })
    await eventually(() => on.runtime.store.available, 5_000)
  })
  afterAll(async () => {
    await on?.stop()
  })

  test('denies the second request in the minute and records the admitted one', async () => {
    const user = uniqueUser('switches-on')
    const key = await on.createKey(user, 'tiny')
    const first = await chat(on.url, key, { max_tokens: 4 })
    expect(first.status).toBe(200)
    expect(first.headers.get('ratelimit')).not.toBeNull()
    await first.text()
    const second = await chat(on.url, key, { max_tokens: 4 })
    expect(second.status).toBe(429)
    await second.text()
    const deadline = Date.now() + 5_000
    let rows = 0
    while (rows !== 1 && Date.now() < deadline) {
      await Bun.sleep(20)
      const [row] = await queryRows<{ n: string }>(
        on.runtime.database.db,
        sql`select count(*)::text as n from usage_events where user_id = ${user}`,
      )
      rows = Number(row!.n)
    }
    expect(rows).toBe(1)
  })
})

describe('breaker switched off', () => {
  let upstream: SimServer
  let off: Gateway
  beforeAll(async () => {
    upstream = await startSimServer({ port: 0 })
    off = await startGateway({
      file: {
        providers: { up: { type: 'openai', base_url: upstream.url } },
        models: { main: { provider: 'up', free: true } },
        breaker: { enabled: false, failure_threshold: 1, failure_rate: 0, retries: { max_retries: 0 } },
      },
    })
  })
  afterAll(async () => {
    await off?.stop()
    await upstream?.stop()
  })

  test('failures past the threshold open nothing: every request still reaches the upstream', async () => {
    const key = await off.createKey(uniqueUser('switches-breaker'), 'enterprise')
    upstream.addFaults([{ status: 500 }, { status: 500 }, { status: 500 }])
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const response = await chat(off.url, key, { model: 'main', max_tokens: 4 })
      statuses.push(response.status)
      await response.text()
    }
    // An upstream that fails answers 503 upstream_unavailable; an open breaker would have kept
    // requests 2 and 3 (and 4, in its cool-down) from reaching the upstream at all.
    expect(statuses).toEqual([503, 503, 503, 200])
    expect(upstream.stats.chat).toBe(4)
    const list = await fetch(`${off.url}/admin/breakers`, {
      headers: { authorization: `Bearer ${adminKey}` },
    })
    const body = (await list.json()) as { data: Array<{ state: string; failures?: number }> }
    expect(body.data.every((breaker) => breaker.state === 'closed')).toBe(true)
  })
})
