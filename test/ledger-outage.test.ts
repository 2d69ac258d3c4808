/**
 * The ledger when Postgres goes away and comes back, through a real gateway: the gateway
 * reaches Postgres through a TCP proxy the test cuts (the shared server keeps running).
 * 200 requests are served while it is cut, readiness says the ledger is degraded, and once
 * the proxy is restored every event lands exactly once. Then graceful shutdowns under load,
 * in process and as a real process sent SIGTERM: drain, ledger flush, close loses no
 * answered request.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import postgres from 'postgres'
import { type TcpProxy, tcpProxy } from '../bench/lib/tcp-proxy'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { type CostGateway, ledgerTotals, rollupMismatches, startCostGateway } from './support/cost'
import { freshPostgresDatabase, type ThrowawayPostgres } from './support/db'
import { startGatewayProcess } from './support/process'
import { noLimits } from './support/quota'
import { waitFor } from './support/redis'

describe('ledger while Postgres is down', () => {
  let database: ThrowawayPostgres
  let proxy: TcpProxy
  let gateway: CostGateway
  let key: string
  /** A direct connection, past the proxy, to look at what was written. */
  let direct: postgres.Sql

  beforeAll(async () => {
    database = await freshPostgresDatabase()
    proxy = tcpProxy(database.url)
    direct = postgres(database.url, { max: 1, onnotice: () => {} })
    gateway = await startCostGateway({
      env: { DATABASE_URL: proxy.url },
      file: {
        // Keys stay cached through the outage, as busy keys do in production.
        auth: { key_cache_ttl_ms: 600_000 },
        ledger: { retry_initial_ms: 20, retry_max_ms: 200 },
        tiers: { unlimited: noLimits },
        global: { concurrent: null },
      },
    })
    key = (await gateway.createKey('outage-user', 'unlimited')).key
  }, 30_000)

  afterAll(async () => {
    proxy?.restore()
    await gateway?.stop()
    await direct?.end({ timeout: 1 })
    proxy?.stop()
    await database?.drop()
  })

  const chat = (i: number) =>
    fetch(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'sim-1',
        messages: [{ role: 'user', content: `outage ${i}` }],
        max_tokens: 5,
      }),
    })

  test('200 requests served while it is down; every event lands exactly once when it is back', async () => {
    const warm = await chat(-1)
    expect(warm.status).toBe(200)
    await waitFor(() => gateway.ledger.stats().written === 1, 5_000, 'the warm-up event')

    proxy.cut()
    const ids: string[] = [warm.headers.get('x-request-id')!]
    let expectedCost = 0n
    for (let wave = 0; wave < 20; wave++) {
      const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => chat(wave * 10 + i)))
      for (const response of responses) {
        expect(response.status).toBe(200)
        ids.push(response.headers.get('x-request-id')!)
        const usage = (
          (await response.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }
        ).usage
        // sim-1: $0.50 in, $1.50 out per 1M tokens.
        expectedCost +=
          (BigInt(usage.prompt_tokens) * 500_000_000n +
            BigInt(usage.completion_tokens) * 1_500_000_000n +
            500_000n) /
          1_000_000n
      }
    }
    await waitFor(() => gateway.ledger.stats().flushFailures > 0, 5_000, 'a failed flush')
    // An event is handed to the ledger when its exchange settles, just after the answer is
    // sent: under load the last wave's can still be on their way when the flush has failed.
    await waitFor(() => gateway.ledger.stats().enqueued === 201, 5_000, 'every event handed to the ledger')
    const stats = gateway.ledger.stats()
    expect(stats.backlog).toBe(200)
    expect(stats.written).toBe(1)
    const ready = (await (await fetch(`${gateway.url}/health/ready`)).json()) as {
      components: Record<string, { status: string; message: string }>
    }
    expect(ready.components.ledger!.status).toBe('degraded')
    expect(ready.components.ledger!.message).toContain('writes failing')
    const [before] = await direct<{ n: number }[]>`select count(*)::int as n from usage_events`
    expect(before!.n).toBe(1)
    // What reads the database degrades instead of failing: /v1/usage still has its quota part.
    const usage = await fetch(`${gateway.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })
    expect(usage.status).toBe(200)
    expect(((await usage.json()) as { spend: unknown }).spend).toBeNull()
    const report = await gateway.admin('/costs/daily')
    expect(report.status).toBe(503)
    expect(((await report.json()) as { code: string }).code).toBe('ledger_unavailable')

    proxy.restore()
    await waitFor(() => gateway.ledger.stats().backlog === 0, 10_000, 'the backlog to drain')
    const db = gateway.runtime.database.db
    const totals = await ledgerTotals(db)
    expect(totals.events).toBe(201)
    expect(totals.distinctRequests).toBe(201)
    const rows = await direct<{ request_id: string }[]>`select request_id from usage_events`
    expect(new Set(rows.map((row) => row.request_id))).toEqual(new Set(ids))
    const [warmRow] = await direct<{ cost: string }[]>`
      select cost_nano_usd::text as cost from usage_events where request_id = ${ids[0]!}`
    expect(totals.cost - BigInt(warmRow!.cost)).toBe(expectedCost)
    expect(await rollupMismatches(db)).toEqual([])
    expect(gateway.ledger.stats().written).toBe(201)
    const after = (await (await fetch(`${gateway.url}/health/ready`)).json()) as {
      components: Record<string, { status: string }>
    }
    expect(after.components.ledger!.status).toBe('healthy')
  }, 60_000)
})

describe('graceful shutdown under load', () => {
  let database: ThrowawayPostgres
  let sim: SimServer

  beforeAll(async () => {
    database = await freshPostgresDatabase()
    sim = await startSimServer({ port: 0, ttftMs: 30, tokensPerSecond: 400 })
  })

  afterAll(async () => {
    await sim?.stop()
    await database?.drop()
  })

  test('every request that was answered is in the ledger after the drain and the flush', async () => {
    const gateway = await startCostGateway({
      env: { DATABASE_URL: database.url },
      file: {
        providers: { upstream: { type: 'openai', base_url: sim.url } },
        models: { 'remote-1': { provider: 'upstream', pricing: { input: 3, output: 15 } } },
        // A long flush interval: whatever the shutdown does not flush is visibly missing.
        ledger: { flush_interval_ms: 60_000, batch_size: 10_000 },
        tiers: { unlimited: noLimits },
        global: { concurrent: null },
      },
    })
    const { key } = await gateway.createKey('shutdown-user', 'unlimited')
    const answered: string[] = []
    let stopping = false
    const client = async (worker: number) => {
      for (let i = 0; !stopping || i < 2; i++) {
        try {
          const response = await fetch(`${gateway.url}/v1/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify({
              model: 'remote-1',
              messages: [{ role: 'user', content: `load ${worker} ${i}` }],
              stream: i % 2 === 0,
              max_tokens: 8,
            }),
          })
          await response.text()
          if (response.status === 200) answered.push(response.headers.get('x-request-id')!)
        } catch {
          return // refused: the server stopped accepting
        }
      }
    }
    const load = Promise.all(Array.from({ length: 24 }, (_, worker) => client(worker)))
    await waitFor(() => answered.length >= 150, 20_000, 'load')
    stopping = true
    // src/main.ts's order: stop accepting and drain in-flight requests, flush the ledger, close.
    await gateway.stop({ drain: true })
    await load
    expect(answered.length).toBeGreaterThanOrEqual(150)

    const direct = postgres(database.url, { max: 1, onnotice: () => {} })
    try {
      const rows = await direct<{ request_id: string }[]>`select request_id from usage_events`
      expect(rows.length).toBe(answered.length)
      expect(new Set(rows.map((row) => row.request_id))).toEqual(new Set(answered))
      const [mismatch] = await direct<{ n: number }[]>`
        select count(*)::int as n from (
          select user_id, (started_at at time zone 'UTC')::date as day, served_model, count(*) as requests
          from usage_events group by 1, 2, 3
        ) e full join daily_usage d on d.user_id = e.user_id and d.day = e.day and d.model = e.served_model
        where d.requests is distinct from e.requests`
      expect(mismatch!.n).toBe(0)
    } finally {
      await direct.end({ timeout: 1 })
    }
  }, 60_000)
})

describe('SIGTERM under load (the process entry)', () => {
  let database: ThrowawayPostgres
  let sim: SimServer

  beforeAll(async () => {
    database = await freshPostgresDatabase()
    sim = await startSimServer({ port: 0, ttftMs: 20, tokensPerSecond: 500 })
  })

  afterAll(async () => {
    await sim?.stop()
    await database?.drop()
  })

  test('src/main.ts drains, flushes the ledger and exits 0 with every answered request recorded', async () => {
    const gateway = await startGatewayProcess({
      env: { DATABASE_URL: database.url },
      file: {
        providers: { upstream: { type: 'openai', base_url: sim.url } },
        models: { 'remote-1': { provider: 'upstream', pricing: { input: 3, output: 15 } } },
        ledger: { flush_interval_ms: 60_000, batch_size: 10_000 },
        tiers: { unlimited: noLimits },
        global: { concurrent: null },
      },
      ready: 'degraded',
    })
    const base = gateway.url
    try {
      const { key } = await gateway.createKey('sigterm-user', 'unlimited')
      const answered: string[] = []
      const worker = async (id: number) => {
        for (let i = 0; ; i++) {
          try {
            const response = await fetch(`${base}/v1/chat/completions`, {
              method: 'POST',
              headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
              body: JSON.stringify({
                model: 'remote-1',
                messages: [{ role: 'user', content: `sigterm ${id} ${i}` }],
                stream: i % 2 === 1,
                max_tokens: 8,
              }),
            })
            await response.text()
            if (response.status === 200) answered.push(response.headers.get('x-request-id')!)
          } catch {
            return
          }
        }
      }
      const load = Promise.all(Array.from({ length: 16 }, (_, id) => worker(id)))
      await waitFor(() => answered.length >= 100, 20_000, 'load')
      process.kill(gateway.pid, 'SIGTERM')
      expect(await gateway.exited).toBe(0)
      await load
      const direct = postgres(database.url, { max: 1, onnotice: () => {} })
      try {
        const rows = await direct<{ request_id: string }[]>`select request_id from usage_events`
        expect(new Set(rows.map((row) => row.request_id))).toEqual(new Set(answered))
        expect(rows).toHaveLength(answered.length)
      } finally {
        await direct.end({ timeout: 1 })
      }
    } finally {
      // A no-op signal once it has exited; removes its temp dir either way.
      await gateway.kill()
    }
  }, 60_000)
})
