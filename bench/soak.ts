/**
 * Soak and chaos (issue 9, item 7): SOAK_SECONDS (default 600) of mixed load at a fixed rate
 * across two gateway processes on one private redis-server and one throwaway Postgres database
 * reached through a cuttable TCP proxy, with a simulator that gets occasional injected faults.
 * In the first half Redis is killed and restarted, Postgres is cut and restored (via the proxy:
 * the shared server is never stopped) and gateway b is SIGKILLed and restarted; the second half
 * is calm, so RSS growth there would be a leak. After a graceful SIGTERM of both gateways (the
 * ledger flushes) the checks print as PASS/FAIL lines into bench/results/soak.{md,json}.
 *
 * Run: `bun run bench soak` or `bun bench/soak.ts`; `SOAK_SECONDS=60` for a quick look.
 */

import postgres from 'postgres'
import { startRedisServer } from '../test/support/redis'
import { createDatabase, type Gateway, startGateway, startSim } from './lib/procs'
import { machineLine, startRecording, table } from './lib/report'
import { highLimits } from './lib/setup'
import { type Check, type Decider, ledgerCheck, quotaCheck, slopeMiBPerMin } from './lib/soak-checks'
import { DEADLINE_MS, type Kind, kindOf, MODEL, type Sent, send } from './lib/soak-client'
import { tcpProxy } from './lib/tcp-proxy'

const seconds = Number(process.env.SOAK_SECONDS ?? 600)
const RATE = 120
const SMALL_PER_MINUTE = 60
const FLUSH_MS = 1000
/** Outages are 20 s in the real run, shorter in a quick one so the phases do not overlap. */
const outageMs = Math.min(20_000, (seconds * 1000) / 8)
/** How often a fault is queued at the simulator, and how long between RSS samples. */
const FAULT_EVERY_MS = 5000
const RSS_EVERY_MS = 5000
/** Slope over the last half above which RSS counts as growing. */
const RSS_SLOPE_LIMIT = 2

const recording = startRecording(
  'soak',
  'Soak and chaos: two gateways, Redis, Postgres and an instance restarted',
)
const redis = await startRedisServer()
const database = await createDatabase()
const proxy = tcpProxy(database.url)
const sim = await startSim({ ttftMs: 5, tokensPerSecond: 400, maxTokens: 16 })
const file = {
  providers: { upstream: { type: 'openai', base_url: `${sim.url}/v1` } },
  models: {
    [MODEL]: { provider: 'upstream', upstream_model: 'sim-1', pricing: { input: 0.5, output: 1.5 } },
  },
  tiers: {
    big: highLimits,
    small: { requests_per_minute: SMALL_PER_MINUTE },
  },
  // `local`: each instance enforces alone while Redis is out, which is what the bound allows for;
  // no refunds, so every admitted request counts against the window.
  global: { concurrent: 1_000_000, requests_per_hour: 1_000_000_000, cost_per_day_usd: 1_000_000_000 },
  quota: { fallback: 'local', refund_requests_on_error: false },
  ledger: { flush_interval_ms: FLUSH_MS },
  cache: { enabled: true, responses: { ttl_seconds: 3600 } },
}
const env = { REDIS_URL: redis.url, DATABASE_URL: proxy.url }
const start = () => startGateway({ file, env })
const gateways: Record<'a' | 'b', Gateway | null> = { a: await start(), b: await start() }
let generation = 1
const keys = {
  big: await Promise.all([1, 2, 3, 4].map((n) => gateways.a!.createKey(`soak-user-${n}`, 'big'))),
  small: await gateways.a!.createKey('soak-small', 'small'),
}

const started = performance.now()
const now = () => performance.now() - started
const endMs = seconds * 1000
const events: Record<string, number> = {}
const records: Sent[] = []
const pending = new Set<Promise<void>>()
const rss: Record<'a' | 'b', Array<[number, number]>> = { a: [], b: [] }

function keyFor(kind: Kind, i: number): string {
  return kind === 'quota' ? keys.small : keys.big[i % keys.big.length]!
}

async function load() {
  for (let i = 0; now() < endMs; i++) {
    const due = (i * 1000) / RATE
    if (due > now()) await Bun.sleep(due - now())
    const which: 'a' | 'b' = i % 2 === 0 ? 'a' : 'b'
    const gateway = gateways[which]
    const kind = kindOf(Math.floor(i / 2))
    // A stopped instance is not called: requests it would get while down count as not sent.
    if (!gateway) continue
    const attempt = { url: gateway.url, key: keyFor(kind, i), kind, i, gateway: which, started }
    const p = send({ ...attempt, generation: which === 'b' ? generation : 1 }).then((record) => {
      records.push(record)
      pending.delete(p)
    })
    pending.add(p)
  }
  await Promise.all(pending)
}

const faults = [
  { status: 500 },
  { status: 503 },
  { reset: true },
  { fail_after_chunks: 2 },
  { stall_ms: 1500 },
]
async function faultLoop() {
  for (let n = 0; now() < endMs; n++) {
    await Bun.sleep(FAULT_EVERY_MS)
    const fault = faults[n % faults.length]
    // Drop a fault nobody took first: while the breaker is open no request reaches the
    // simulator, and queued faults would outnumber its half-open probes and keep it open.
    await fetch(`${sim.url}/_sim/reset`, { method: 'POST' }).catch(() => {})
    await fetch(`${sim.url}/_sim/faults`, { method: 'POST', body: JSON.stringify([fault]) }).catch(() => {})
  }
}

async function rssLoop() {
  while (now() < endMs) {
    for (const which of ['a', 'b'] as const) {
      const kib = gateways[which] ? await gateways[which].rssKiB() : 0
      if (kib > 0) rss[which].push([now(), kib])
    }
    await Bun.sleep(RSS_EVERY_MS)
  }
}

const at = (ms: number) => Bun.sleep(Math.max(0, ms - now()))
async function chaos() {
  await at(endMs * 0.1)
  events.redisKilled = now()
  await redis.kill()
  await at(events.redisKilled + outageMs)
  await redis.restart()
  events.redisRestarted = now()
  await at(endMs * 0.25)
  events.postgresCut = now()
  proxy.cut()
  await at(events.postgresCut + outageMs)
  proxy.restore()
  events.postgresRestored = now()
  await at(endMs * 0.4)
  const victim = gateways.b!
  events.gatewayKilled = now()
  gateways.b = null
  process.kill(victim.pid, 'SIGKILL')
  await victim.stop(0)
  generation = 2
  gateways.b = await start()
  events.gatewayRestarted = now()
}

console.log(`soak: ${seconds} s at ${RATE} req/s, outages ${outageMs / 1000} s`)
await Promise.all([load(), faultLoop(), rssLoop(), chaos()])
await Promise.all([gateways.a!.stop(30_000), gateways.b!.stop(30_000)])

const sql = postgres(database.url, { max: 1, onnotice: () => {} })
const rowList = await sql<Array<{ id: string; n: number }>>`
  select client_request_id as id, count(*)::int as n from usage_events group by client_request_id`
const totalRows = (await sql<Array<{ n: number }>>`select count(*)::int as n from usage_events`)[0]!.n
await sql.end()
const rows = new Map(rowList.map(({ id, n }) => [id, n]))
// Every request and its ledger count, for digging into a FAIL (too big to commit with the results).
if (process.env.SOAK_RECORDS)
  await Bun.write(
    process.env.SOAK_RECORDS,
    JSON.stringify(records.map((r) => ({ ...r, rows: rows.get(r.id) ?? 0 }))),
  )
const kill = { at: events.gatewayKilled!, bufferMs: 2 * FLUSH_MS }
// Local fallback may engage a moment before the kill is noticed and stay a few seconds after the restart.
const deciders: Decider[] = [
  { name: 'redis, first life', from: 0, to: events.redisKilled! },
  { name: 'redis, after restart', from: events.redisRestarted!, to: endMs + DEADLINE_MS },
  { name: 'local store, a', from: events.redisKilled! - 1000, to: events.redisRestarted! + 10_000 },
  { name: 'local store, b', from: events.redisKilled! - 1000, to: events.redisRestarted! + 10_000 },
]
const ledger = ledgerCheck(records, rows, kill)
const half = endMs / 2
const slopes = (['a', 'b'] as const).map((which) => ({
  which,
  slope: slopeMiBPerMin(rss[which].filter(([t]) => t >= half)),
  first: rss[which].find(([t]) => t >= half)?.[1] ?? 0,
  last: rss[which].at(-1)?.[1] ?? 0,
}))
const timeouts = records.filter((record) => record.outcome === 'timeout').length
const checks: Check[] = [
  ledger.check,
  quotaCheck(records, SMALL_PER_MINUTE, deciders, endMs, kill),
  {
    name: `rss: flat in the last half (slope < ${RSS_SLOPE_LIMIT} MiB/min per instance)`,
    pass: slopes.every(({ slope }) => slope < RSS_SLOPE_LIMIT),
    detail: slopes
      .map(
        (s) =>
          `${s.which}: ${s.slope.toFixed(2)} MiB/min (${(s.first / 1024).toFixed(0)} → ${(s.last / 1024).toFixed(0)} MiB)`,
      )
      .join('; '),
  },
  {
    name: `deadline: no request past its ${DEADLINE_MS / 1000} s client deadline`,
    pass: timeouts === 0,
    detail: `${timeouts} timed out of ${records.length}`,
  },
]
const lines = checks.map((check) => `${check.pass ? 'PASS' : 'FAIL'} ${check.name}: ${check.detail}`)
console.log(lines.join('\n'))

const byStatus: Record<string, number> = {}
for (const record of records) {
  const label = record.status ? `${record.status} ${record.code ?? ''}`.trim() : record.outcome
  byStatus[label] = (byStatus[label] ?? 0) + 1
}
const s = (ms: number | undefined) => ((ms ?? 0) / 1000).toFixed(1)
const markdown = [
  `Duration ${seconds} s (SOAK_SECONDS) at ${RATE} req/s across two gateways; outages ${outageMs / 1000} s.`,
  '```',
  ...lines,
  '```',
  table(
    ['event', 's'],
    Object.entries(events).map(([name, ms]) => [name, s(ms)]),
  ),
  '',
  table(
    ['answer', 'requests'],
    Object.entries(byStatus)
      .sort((x, y) => y[1] - x[1])
      .map(([label, n]) => [label, n]),
  ),
  '',
  `usage_events rows: ${totalRows}. Missing by answer: ${JSON.stringify(ledger.missingByCode)}.`,
].join('\n')
await recording.write(
  {
    seconds,
    rate: RATE,
    outageMs,
    events,
    checks,
    byStatus,
    ledger,
    rss,
    totalRows,
    machine: machineLine(recording.machine),
  },
  markdown,
)
proxy.stop()
await database.drop()
await redis.kill()
await sim.stop()
process.exit(checks.every((check) => check.pass) ? 0 : 1)
