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

/** Writes to a socket in order, keeping what the kernel buffer did not take until `drain`. */
function sender() {
  const pending: Uint8Array[] = []
  const flush = (socket: Bun.Socket<unknown>) => {
    while (pending.length > 0) {
      const chunk = pending[0]!
      const written = socket.write(chunk)
      if (written < chunk.byteLength) {
        pending[0] = chunk.subarray(Math.max(0, written))
        return
      }
      pending.shift()
    }
  }
  return {
    send(socket: Bun.Socket<unknown>, chunk: Uint8Array) {
      pending.push(chunk)
      flush(socket)
    },
    drain: flush,
  }
}

/** A TCP proxy to Postgres that holds every client-to-server chunk for `delay.ms`. */
function delayingProxy(target: string, delay: { ms: number }) {
  const upstream = new URL(target)
  type Ends = {
    server: Bun.Socket<undefined> | null
    early: Uint8Array[]
    up: ReturnType<typeof sender>
    down: ReturnType<typeof sender>
    releaseAt: number
  }
  const listener = Bun.listen<Ends>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open(client) {
        const ends: Ends = { server: null, early: [], up: sender(), down: sender(), releaseAt: 0 }
        client.data = ends
        void Bun.connect({
          hostname: upstream.hostname,
          port: Number(upstream.port || 5432),
          socket: {
            open(server) {
              ends.server = server
              for (const chunk of ends.early) ends.up.send(server, chunk)
            },
            data: (_server, chunk) => ends.down.send(client, new Uint8Array(chunk)),
            drain: (server) => ends.up.drain(server),
            close: () => void client.end(),
          },
        })
      },
      data(client, chunk) {
        const copy = new Uint8Array(chunk)
        const forward = () => {
          if (client.data.server) client.data.up.send(client.data.server, copy)
          else client.data.early.push(copy)
        }
        // Never earlier than a chunk sent before it, even when the delay just went down.
        const at = Math.max(performance.now() + delay.ms, client.data.releaseAt)
        client.data.releaseAt = at
        if (at > performance.now()) setTimeout(forward, at - performance.now())
        else forward()
      },
      drain: (client) => client.data.down.drain(client),
      close: (client) => void client.data.server?.end(),
    },
  })
  const url = new URL(target)
  url.hostname = '127.0.0.1'
  url.port = String(listener.port)
  return { url: url.toString(), stop: () => listener.stop(true) }
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
    const delay = { ms: 0 }
    const proxy = delayingProxy(url, delay)
    const unlimited = { requests_per_minute: null, requests_per_hour: null, requests_per_day: null }
    const config = buildConfig(
      {
        DATABASE_URL: proxy.url,
        DATA_DIR: `/tmp/tollgate-bench-${process.pid}`,
        ADMIN_API_KEY: ADMIN_KEY,
      },
      {
        auth: { key_cache_ttl_ms: 600_000 },
        tiers: { bench: { ...unlimited, tokens_per_day: null, cost_per_day_usd: null, concurrent: null } },
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
      delay.ms = ms
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
    delay.ms = 0
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
