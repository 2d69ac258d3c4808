/**
 * The write-behind ledger on both drivers: idempotent flushes whose rollups count only what
 * was inserted, batching by size and by time, retries that keep the batch, the overflow
 * policies, and a shutdown that flushes everything or spills what it cannot write and
 * replays it at the next start.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import { queryRows } from '../db/client'
import { type EventRow, Ledger, type LedgerSink, postgresSink } from '../plugins/cost'
import { ledgerTotals, rollupMismatches } from './support/cost'
import { openTestDatabase, type TestDatabase } from './support/db'
import { waitFor } from './support/redis'

const quiet = { info() {}, warn() {}, error() {} }

let sequence = 0
function row(overrides: Partial<EventRow> = {}): EventRow {
  sequence++
  return {
    request_id: `req-${process.pid}-${sequence}-${crypto.randomUUID()}`,
    client_request_id: null,
    started_at: new Date(Date.UTC(2031, 0, 15, 12) + (sequence % 3) * 86_400_000).toISOString(),
    key_id: 'key-1',
    user_id: `user-${sequence % 4}`,
    tier: 'free',
    route: '/v1/chat/completions',
    requested_model: 'm',
    served_model: sequence % 2 ? 'model-a' : 'model-b',
    provider: 'sim',
    stream: false,
    status: 200,
    outcome: sequence % 7 === 0 ? 'error' : 'ok',
    error_code: null,
    cache_status: 'NONE',
    prompt_tokens: 10 + (sequence % 5),
    completion_tokens: sequence % 11,
    cached_tokens: 0,
    cost_nano_usd: String(1000 + sequence),
    saved_nano_usd: '0',
    latency_ms: 5,
    ttft_ms: null,
    attempts: 1,
    ...overrides,
  }
}
const rows = (count: number) => Array.from({ length: count }, () => row())
const sumCost = (list: EventRow[]) => list.reduce((sum, r) => sum + BigInt(r.cost_nano_usd), 0n)

interface LedgerHarness {
  ledger: Ledger
  failures: { remaining: number; afterCommit: boolean }
  writes: number[]
}

/** A ledger over `database` whose sink can be made to fail, before or after it commits. */
function harness(handle: TestDatabase, settings: Partial<ConstructorParameters<typeof Ledger>[0]> = {}) {
  const failures = { remaining: 0, afterCommit: false }
  const writes: number[] = []
  const wrapSink =
    (sink: LedgerSink): LedgerSink =>
    async (batch) => {
      writes.push(batch.length)
      if (failures.remaining > 0 && !failures.afterCommit) {
        failures.remaining--
        throw new Error('connection refused (injected)')
      }
      const result = await sink(batch)
      if (failures.remaining > 0) {
        failures.remaining--
        throw new Error('connection reset before the commit was acknowledged (injected)')
      }
      return result
    }
  const ledger = new Ledger({
    db: handle.database.db,
    log: quiet,
    now: Date.now,
    wrapSink,
    onFlush: () => {},
    flushIntervalMs: 50,
    batchSize: 100,
    maxBacklog: 1000,
    overflow: 'reject',
    retryInitialMs: 10,
    retryMaxMs: 40,
    shutdownTimeoutMs: 5000,
    spillDir: null,
    budgetRefreshMs: 60_000,
    ...settings,
  })
  return { ledger, failures, writes } satisfies LedgerHarness
}

for (const kind of ['postgres', 'pglite'] as const) {
  describe(`ledger on ${kind}`, () => {
    let handle: TestDatabase

    beforeAll(async () => {
      handle = await openTestDatabase(kind)
    })
    afterAll(() => handle?.cleanup())

    const db = () => handle.database.db
    const clear = () => handle.database.db.execute(sql`truncate usage_events, daily_usage`)

    test('a duplicate flush inserts nothing twice, and the rollup counts only what was inserted', async () => {
      await clear()
      const sink = postgresSink(db())
      const batch = rows(250)
      expect(await sink(batch)).toEqual({ inserted: 250 })
      expect(await sink(batch)).toEqual({ inserted: 0 })
      const extra = rows(50)
      expect(await sink([...batch.slice(0, 100), ...extra])).toEqual({ inserted: 50 })
      const totals = await ledgerTotals(db())
      expect(totals.events).toBe(300)
      expect(totals.cost).toBe(sumCost([...batch, ...extra]))
      expect(await rollupMismatches(db())).toEqual([])
      const [rollup] = await queryRows<{ requests: string }>(
        db(),
        sql`select sum(requests)::text as requests from daily_usage`,
      )
      expect(rollup!.requests).toBe('300')
    })

    test('the UTC day of the start time decides the rollup day', async () => {
      await clear()
      await postgresSink(db())([
        row({ user_id: 'edge', started_at: '2031-01-31T23:59:59.999Z' }),
        row({ user_id: 'edge', started_at: '2031-02-01T00:00:00.000Z' }),
      ])
      const days = await queryRows<{ day: string }>(
        db(),
        sql`select day::text as day from daily_usage where user_id = 'edge' order by day`,
      )
      expect(days.map((d) => d.day)).toEqual(['2031-01-31', '2031-02-01'])
    })

    test('batches: a full batch goes at once, a partial one after the flush interval', async () => {
      await clear()
      const { ledger, writes } = harness(handle, { flushIntervalMs: 300 })
      const started = performance.now()
      for (const r of rows(250)) ledger.writer.enqueue(r)
      await waitFor(() => ledger.stats().written === 200, 5_000)
      expect(performance.now() - started).toBeLessThan(250)
      expect(ledger.stats().backlog).toBe(50)
      await waitFor(() => ledger.stats().written === 250, 5_000)
      expect(writes).toEqual([100, 100, 50])
      await ledger.close()
    })

    test('a failing database: the batch is kept, retried with backoff, and lands exactly once', async () => {
      await clear()
      const { ledger, failures, writes } = harness(handle)
      failures.remaining = 3
      const batch = rows(100)
      for (const r of batch) ledger.writer.enqueue(r)
      await waitFor(() => ledger.stats().written === 100, 5_000)
      const stats = ledger.stats()
      expect(stats.flushFailures).toBe(3)
      expect(stats.consecutiveFailures).toBe(0)
      expect(stats.lastFailure?.message).toContain('injected')
      expect(writes).toEqual([100, 100, 100, 100])
      expect((await ledgerTotals(db())).events).toBe(100)
      await ledger.close()
    })

    test('a commit whose acknowledgement was lost is retried without counting twice', async () => {
      await clear()
      const { ledger, failures } = harness(handle)
      failures.remaining = 2
      failures.afterCommit = true
      const batch = rows(100)
      for (const r of batch) ledger.writer.enqueue(r)
      await waitFor(() => ledger.stats().flushes === 1, 5_000)
      const stats = ledger.stats()
      expect(stats.written).toBe(0)
      expect(stats.duplicates).toBe(100)
      const totals = await ledgerTotals(db())
      expect(totals.events).toBe(100)
      expect(totals.cost).toBe(sumCost(batch))
      expect(await rollupMismatches(db())).toEqual([])
      await ledger.close()
    })

    test('reject policy: beyond the backlog the ledger refuses and says so; nothing is dropped', async () => {
      await clear()
      const { ledger, failures } = harness(handle, { maxBacklog: 150 })
      failures.remaining = Number.POSITIVE_INFINITY
      for (const r of rows(160)) expect(ledger.writer.enqueue(r)).toBe(true)
      expect(ledger.refusing).toBe(true)
      const health = await ledger.healthCheck().check()
      expect(health.status).toBe('unhealthy')
      expect(health.message).toContain('refusing model requests')
      failures.remaining = 0
      await waitFor(() => ledger.stats().written === 160, 5_000)
      expect(ledger.refusing).toBe(false)
      expect((await ledger.healthCheck().check()).status).toBe('healthy')
      await ledger.close()
    })

    test('drop policy: beyond the backlog new events are dropped and counted, with their cost', async () => {
      await clear()
      const { ledger, failures } = harness(handle, { maxBacklog: 100, overflow: 'drop' })
      failures.remaining = Number.POSITIVE_INFINITY
      const batch = rows(130)
      const accepted = batch.map((r) => ledger.writer.enqueue(r))
      expect(accepted.filter(Boolean)).toHaveLength(100)
      const stats = ledger.stats()
      expect(stats.dropped).toBe(30)
      expect(stats.droppedCostNanoUsd).toBe(sumCost(batch.slice(100)))
      expect(ledger.refusing).toBe(false)
      const health = await ledger.healthCheck().check()
      expect(health).toEqual({ status: 'degraded', message: 'backlog 100/100 full: 30 events dropped' })
      failures.remaining = 0
      await waitFor(() => ledger.stats().written === 100, 5_000)
      await ledger.close()
    })

    test('close() flushes everything, partial batches included', async () => {
      await clear()
      const { ledger } = harness(handle, { flushIntervalMs: 60_000 })
      const batch = rows(333)
      for (const r of batch) ledger.writer.enqueue(r)
      await ledger.close()
      const totals = await ledgerTotals(db())
      expect(totals.events).toBe(333)
      expect(totals.cost).toBe(sumCost(batch))
    })

    test('events a shutdown cannot write are spilled, and written once at the next start', async () => {
      await clear()
      const spillDir = await mkdtemp(join(tmpdir(), 'tollgate-spill-'))
      try {
        const first = harness(handle, { spillDir, shutdownTimeoutMs: 200 })
        first.failures.remaining = Number.POSITIVE_INFINITY
        const batch = rows(120)
        for (const r of batch) first.ledger.writer.enqueue(r)
        await first.ledger.close()
        expect(first.ledger.stats().unwritten).toBe(120)
        expect(await readdir(spillDir)).toHaveLength(1)
        expect((await ledgerTotals(db())).events).toBe(0)

        const second = harness(handle, { spillDir })
        await second.ledger.start()
        await second.ledger.start()
        expect(await readdir(spillDir)).toHaveLength(0)
        const totals = await ledgerTotals(db())
        expect(totals.events).toBe(120)
        expect(totals.cost).toBe(sumCost(batch))
        expect(await rollupMismatches(db())).toEqual([])
        await second.ledger.close()
      } finally {
        await rm(spillDir, { recursive: true, force: true })
      }
    })
  })
}
