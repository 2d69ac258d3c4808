/**
 * Ledger benchmark (`bun run bench/ledger.ts`), two questions:
 *
 * 1. Throughput: how many events per second the write-behind writer puts into Postgres.
 *    BENCH_EVENTS events (1,000 users, 5 models, one day, so rollup rows are shared as in
 *    production) are queued at once into a Ledger over a fresh database; the writer flushes
 *    full batches back to back, one statement each; rate = events / time until all are
 *    written and the rollups match. Once per batch size.
 * 2. Isolation: does request latency change when the database is slow? An in-process gateway
 *    (built-in simulator, in-memory store) reaches Postgres through a TCP proxy that holds
 *    every client-to-server chunk for 0 or 200 ms, so every flush takes 200 ms longer. An
 *    open-loop client sends BENCH_RATE requests/s for BENCH_SECONDS (latency counted from
 *    each request's due time); the two settings alternate, twice each.
 *
 * Writes bench/results/ledger.json and .md.
 */
import { sql } from 'drizzle-orm'
import { openDatabase, queryRows } from '../db/client'
import { createApiKey } from '../plugins/auth'
import { type EventRow, Ledger } from '../plugins/cost'
import { createApp } from '../src/app'
import { buildConfig } from '../src/config'
import { setLogLevel } from '../src/log'
import { createRuntime } from '../src/runtime'
import { summarize } from './lib/load'
import { ADMIN_KEY, createDatabase } from './lib/procs'
import { startRecording, table } from './lib/report'
import { noLimits } from './lib/setup'
import { tcpProxy } from './lib/tcp-proxy'

const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback)
const events = env('BENCH_EVENTS', 200_000)
const rate = env('BENCH_RATE', 300)
const seconds = env('BENCH_SECONDS', 8)
const quiet = { info() {}, warn() {}, error() {} }
setLogLevel('silent')

async function withDatabase<T>(run: (url: string) => Promise<T>): Promise<T> {
  const database = await createDatabase()
  try {
    return await run(database.url)
  } finally {
    await database.drop()
  }
}

function event(i: number, day: string): EventRow {
  return {
    request_id: `bench-${i}-${crypto.randomUUID()}`,
    client_request_id: null,
    started_at: `${day}T12:00:00.000Z`,
    key_id: `key-${i % 1000}`,
    user_id: `user-${i % 1000}`,
    tier: 'pro',
    route: '/v1/chat/completions',
    requested_model: `model-${i % 5}`,
    served_model: `model-${i % 5}`,
    provider: 'sim',
    stream: i % 2 === 0,
    status: 200,
    outcome: 'ok',
    error_code: null,
    cache_status: 'MISS',
    prompt_tokens: 100 + (i % 50),
    completion_tokens: 20 + (i % 30),
    cached_tokens: 0,
    cost_nano_usd: String(12_345 + i),
    saved_nano_usd: '0',
    latency_ms: 12,
    ttft_ms: 5,
    attempts: 1,
  }
}

async function throughput(batchSize: number) {
  return withDatabase(async (url) => {
    const database = await openDatabase({ url, dataDir: '' })
    const ledger = new Ledger({
      db: database.db,
      log: quiet,
      now: Date.now,
      wrapSink: (sink) => sink,
      onFlush: () => {},
      flushIntervalMs: 250,
      batchSize,
      maxBacklog: events,
      overflow: 'reject',
      retryInitialMs: 100,
      retryMaxMs: 5000,
      shutdownTimeoutMs: 60_000,
      spillDir: null,
      budgetRefreshMs: 60_000,
    })
    const rows = Array.from({ length: events }, (_, i) => event(i, '2031-05-05'))
    const started = performance.now()
    for (const row of rows) ledger.writer.enqueue(row)
    await ledger.close()
    const elapsed = (performance.now() - started) / 1000
    const stats = ledger.stats()
    const [check] = await queryRows<{ n: number }>(
      database.db,
      sql`select sum(requests)::int as n from daily_usage`,
    )
    await database.close()
    if (stats.written !== events || check?.n !== events)
      throw new Error(`wrote ${stats.written} of ${events}`)
    return {
      batchSize,
      events,
      seconds: round(elapsed),
      eventsPerSecond: Math.round(events / elapsed),
      flushes: stats.flushes,
      meanFlushMs: round(stats.totalFlushMs / stats.flushes),
      maxFlushMs: round(stats.maxFlushMs),
    }
  })
}

async function openLoop(base: string, key: string, label: string) {
  const total = Math.round(rate * seconds)
  const latencies: number[] = []
  let failures = 0
  const start = performance.now() + 50
  const body = (i: number) =>
    JSON.stringify({ model: 'sim-1', messages: [{ role: 'user', content: `${label} ${i}` }], max_tokens: 8 })
  await Promise.all(
    Array.from({ length: total }, async (_, i) => {
      const due = start + (i * 1000) / rate
      await Bun.sleep(Math.max(0, due - performance.now()))
      const response = await fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: body(i),
      })
      await response.arrayBuffer()
      if (response.status === 200) latencies.push(performance.now() - due)
      else failures++
    }),
  )
  const { p50, p99, max } = summarize(latencies)
  return { requests: total, failures, p50, p99, max }
}

async function isolation() {
  return withDatabase(async (url) => {
    const proxy = tcpProxy(url)
    const config = buildConfig(
      {
        DATABASE_URL: proxy.url,
        DATA_DIR: `/tmp/tollgate-bench-${process.pid}`,
        ADMIN_API_KEY: ADMIN_KEY,
      },
      {
        auth: { key_cache_ttl_ms: 600_000 },
        tiers: { bench: noLimits },
        global: { concurrent: null },
      },
    )
    const runtime = await createRuntime(config)
    const app = createApp(runtime).listen({ port: 0, hostname: '127.0.0.1' })
    const base = `http://127.0.0.1:${app.server!.port}`
    const { key } = await createApiKey(runtime.database.db, { userId: 'bench', name: 'bench', tier: 'bench' })
    await openLoop(base, key, 'warm-up')
    const runs = []
    for (const ms of [0, 200, 0, 200]) {
      proxy.delayMs = ms
      const before = app.decorator.ledger.stats()
      const result = await openLoop(base, key, `delay-${ms}-${runs.length}`)
      const after = app.decorator.ledger.stats()
      runs.push({
        flushDelayMs: ms,
        ...result,
        flushes: after.flushes - before.flushes,
        meanFlushMs: round(
          (after.totalFlushMs - before.totalFlushMs) / Math.max(1, after.flushes - before.flushes),
        ),
      })
    }
    proxy.delayMs = 0
    await app.server!.stop(true)
    await app.decorator.ledger.close()
    await runtime.close()
    proxy.stop()
    return runs
  })
}

const round = (value: number) => Math.round(value * 100) / 100

const recorder = startRecording(
  'ledger',
  'ledger: write throughput, and request latency while Postgres is slow',
)
const writes = [await throughput(1000), await throughput(5000)]
const latency = await isolation()

const markdown = [
  'Write throughput (one writer, one statement per batch, events + rollups):',
  '',
  table(
    ['batch size', 'events', 'seconds', 'events/s', 'flushes', 'mean flush ms', 'max flush ms'],
    writes.map((w) => [
      w.batchSize,
      w.events,
      w.seconds,
      w.eventsPerSecond,
      w.flushes,
      w.meanFlushMs,
      w.maxFlushMs,
    ]),
  ),
  '',
  `Request latency while every flush is slowed (open loop, ${rate} req/s for ${seconds} s, ms from the due time):`,
  '',
  table(
    ['flush delay ms', 'requests', 'failures', 'p50 ms', 'p99 ms', 'max ms', 'flushes', 'mean flush ms'],
    latency.map((r) => [
      r.flushDelayMs,
      r.requests,
      r.failures,
      r.p50,
      r.p99,
      r.max,
      r.flushes,
      r.meanFlushMs,
    ]),
  ),
].join('\n')

await recorder.write({ rate, seconds, writes, latency }, markdown)
