/**
 * Quota benchmark (not a test): `bun run bench quota` (or `bun run bench/quota.ts`).
 *
 * 1. Admission checks per second: QuotaService.reserve straight against Redis (the user's
 *    and the global script, one pipeline), N concurrent callers over 10,000 users; and the
 *    latency of one check at a fixed 1,000 checks/s, reconciled as the gateway does.
 * 2. Latency the quota adds to the gateway: an in-process gateway with the in-process
 *    simulator, a fixed 1,000 requests/s (open model), three ways, interleaved in rounds so
 *    whatever else the machine does hits all of them alike:
 *    - `on`: every user and global limit set (high enough never to deny), leases included;
 *    - `unlimited`: an unlimited tier and no global caps: the scripts still run on Redis;
 *    - `baseline`: a store that answers every script call "admitted" at once, without Redis
 *      or Lua: the gateway without quota state, built without touching src/.
 * Load comes from bench/lib/load.ts (`openLoop`: latency from each request's due time, so
 * the generator's timer lag is in every scenario alike and cancels out of the differences).
 * Writes bench/results/quota.json and .md. Target: `on` adds under 0.5 ms at p99.
 *
 * Env: REDIS_URL (default redis://127.0.0.1:6379), DATABASE_URL (default: PGlite in a temp
 * folder; auth is answered from its in-process cache either way), BENCH_SECONDS (one round
 * of one scenario, default 4), BENCH_ROUNDS (default 3).
 */
import { createClient } from 'redis'
import { Exchange, freePrice, SettlementHub } from '../plugins/exchange'
import { type GlobalLimits, type QuotaService, quota, type TierLimits } from '../plugins/quota'
import {
  createStore,
  RedisStore,
  type ScriptArg,
  type ScriptReply,
  type Store,
  type StoreScript,
} from '../plugins/store'
import { type Gateway, startGateway } from '../test/support/gateway'
import { type Latency, openLoop, type RunResult, summarize } from './lib/load'
import { delta, ms, startRecording, table } from './lib/report'

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const roundS = Number(process.env.BENCH_SECONDS ?? 4)
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const rate = 1000
const prefix = `bench:quota:${process.pid}:`

const unlimited: TierLimits = {
  requests_per_minute: null,
  requests_per_hour: null,
  requests_per_day: null,
  tokens_per_day: null,
  cost_per_day_usd: null,
  concurrent: null,
}
/** Every limit present, none reachable: the scripts do all their work and always admit. */
const everything: TierLimits = {
  requests_per_minute: 10_000_000,
  requests_per_hour: 100_000_000,
  requests_per_day: 1_000_000_000,
  tokens_per_day: 1_000_000_000_000,
  cost_per_day_usd: 1_000_000,
  concurrent: 10_000,
}
const allGlobal: GlobalLimits = {
  concurrent: 10_000,
  requests_per_hour: 100_000_000,
  cost_per_day_usd: 1_000_000,
}
const noGlobal: GlobalLimits = { concurrent: null, requests_per_hour: null, cost_per_day_usd: null }

/** Answers the quota scripts "admitted, nothing used" at once: no network, no Lua. */
class AdmitEverythingStore implements Store {
  readonly kind = 'memory' as const
  readonly available = true
  async get() {
    return null
  }
  async set() {}
  async del() {
    return 0
  }
  async incr() {
    return 0
  }
  async run<R extends ScriptReply>(script: StoreScript<R>, _keys: string[], args: ScriptArg[]): Promise<R> {
    if (script.name !== 'tollgate_quota_admit') return 1 as R
    const reply: ScriptReply[] = [1, '', 0, Math.floor(Date.now() / 86_400_000), 0, 0, 0]
    for (let i = 10; i < args.length; i += 2) reply.push(-1, 0)
    return reply as R
  }
  async ping() {
    return 0
  }
  async close() {}
}

/** Times Redis stopped answering in time: the fallback decided meanwhile, so those figures are not Redis'. */
let outages = 0

/** Waits for Redis, so no measurement starts on the fallback, and counts later outages. */
async function connected(store: Store): Promise<void> {
  if (!(store instanceof RedisStore)) return
  if (!(await store.waitUntilAvailable(15_000))) throw new Error(`Redis at ${redisUrl} does not answer`)
  store.onStateChange((available) => {
    if (!available) outages++
  })
}

async function withService<T>(work: (service: QuotaService, hub: SettlementHub) => Promise<T>): Promise<T> {
  const store = createStore({ url: redisUrl, keyPrefix: `${prefix}checks:` })
  await connected(store)
  const hub = new SettlementHub()
  try {
    return await work(
      quota({ store, hub, tiers: { bench: everything }, global: allGlobal }).decorator.quota,
      hub,
    )
  } finally {
    await store.close()
  }
}

function exchangeFor(hub: SettlementHub, i: number): Exchange {
  const exchange = new Exchange(hub, { id: String(i), method: 'POST', path: '/v1/chat/completions' })
  exchange.route = '/v1/chat/completions'
  exchange.principal = { keyId: 'k', userId: `bench-${i % 10_000}`, tier: 'bench', overrides: {} }
  exchange.estimatedTokens = 12
  exchange.price = freePrice
  return exchange
}

/** Settles as a route does after a short answer: reconciliation runs off the measured path. */
function finish(exchange: Exchange): void {
  exchange.usage = { promptTokens: 12, completionTokens: 8, cachedTokens: 0 }
  exchange.settle({ outcome: 'ok', status: 200 })
}

/** `concurrency` callers reserve back to back for `durationS`. */
function checksPerSecond(concurrency: number, durationS: number) {
  return withService(async (service, hub) => {
    const latencies: number[] = []
    let errors = 0
    let issued = 0
    const start = performance.now()
    const caller = async () => {
      while (performance.now() - start < durationS * 1000) {
        const exchange = exchangeFor(hub, issued++)
        const began = performance.now()
        try {
          await service.reserve(exchange, 16)
          latencies.push(performance.now() - began)
          finish(exchange)
        } catch {
          errors++
        }
      }
    }
    await Promise.all(Array.from({ length: concurrency }, caller))
    const perSecond = Math.round((latencies.length / (performance.now() - start)) * 1000)
    return { concurrency, perSecond, errors, latency: summarize(latencies) }
  })
}

/** One check every 1/rate s whatever the answers do; latency from each check's due time. */
function checksAtRate(durationS: number) {
  return withService(async (service, hub) => {
    const total = rate * durationS
    const latencies: number[] = []
    const pending: Array<Promise<void>> = []
    const start = performance.now() + 5
    let errors = 0
    for (let i = 0; i < total; i++) {
      const due = start + (i * 1000) / rate
      const wait = due - performance.now()
      if (wait > 0) await Bun.sleep(wait)
      const exchange = exchangeFor(hub, i)
      pending.push(
        service.reserve(exchange, 16).then(
          () => {
            latencies.push(performance.now() - due)
            finish(exchange)
          },
          () => {
            errors++
          },
        ),
      )
    }
    await Promise.all(pending)
    return { rate, errors, latency: summarize(latencies) }
  })
}

type ScenarioName = 'on' | 'unlimited' | 'baseline'

interface Scenario {
  name: ScenarioName
  gateway: Gateway
  key: string
  runs: RunResult[]
}

async function scenario(
  name: ScenarioName,
  store: Store,
  tier: TierLimits,
  global: GlobalLimits,
): Promise<Scenario> {
  const gateway = await startGateway({
    env: process.env.DATABASE_URL ? { DATABASE_URL: process.env.DATABASE_URL } : {},
    file: { tiers: { bench: tier }, global },
    store,
  })
  await connected(store)
  return { name, gateway, key: await gateway.createKey(`bench-${name}-${process.pid}`, 'bench'), runs: [] }
}

const body = JSON.stringify({
  model: 'sim-1',
  messages: [{ role: 'user', content: 'Benchmark me' }],
  max_tokens: 8,
})

function load(target: Scenario, durationS: number): Promise<RunResult> {
  return openLoop(
    {
      name: target.name,
      url: `${target.gateway.url}/v1/chat/completions`,
      headers: { authorization: `Bearer ${target.key}`, 'content-type': 'application/json' },
      body,
    },
    { rate, durationS },
  )
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

/** Deletes every key this run wrote, so the shared Redis keeps nothing of the benchmark. */
async function cleanUp(): Promise<number> {
  const client = createClient({ url: redisUrl })
  await client.connect()
  let deleted = 0
  try {
    for await (const batch of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 }))
      if (batch.length > 0) deleted += await client.del(batch)
  } finally {
    client.destroy()
  }
  return deleted
}

const recording = startRecording(
  'quota',
  'quota: admission checks on Redis, and the latency quotas add at 1,000 req/s',
)
console.log(`quota benchmark: Redis ${redisUrl}, ${rounds} rounds of ${roundS} s per scenario`)

const throughput = []
for (const concurrency of [1, 16, 64]) {
  throughput.push(await checksPerSecond(concurrency, 3))
  console.log(`admission checks, ${concurrency} concurrent: ${throughput.at(-1)!.perSecond}/s`)
}
const atRate = await checksAtRate(roundS)
console.log(`admission checks at ${rate}/s: p50 ${atRate.latency.p50} ms, p99 ${atRate.latency.p99} ms`)

const scenarios = [
  await scenario('on', createStore({ url: redisUrl, keyPrefix: `${prefix}on:` }), everything, allGlobal),
  await scenario(
    'unlimited',
    createStore({ url: redisUrl, keyPrefix: `${prefix}unlimited:` }),
    unlimited,
    noGlobal,
  ),
  await scenario('baseline', new AdmitEverythingStore(), unlimited, noGlobal),
]
try {
  // Warm-up: JIT, connections, script caches.
  for (const target of scenarios) await load(target, 1)
  for (let round = 0; round < rounds; round++) {
    for (const target of scenarios) {
      const result = await load(target, roundS)
      target.runs.push(result)
      console.log(
        `round ${round + 1} ${target.name}: p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, ` +
          `${result.achievedRate}/s, errors ${result.errors}`,
      )
    }
  }
} finally {
  await Promise.all(scenarios.map((target) => target.gateway.stop()))
}

const baseline = scenarios[2]!
const medianOf = (target: Scenario, pick: (latency: Latency) => number) =>
  median(target.runs.map((run) => pick(run.latency)))
// Paired by round (the runs of one round are seconds apart), then the median over rounds.
const added = (target: Scenario, pick: (latency: Latency) => number) =>
  median(target.runs.map((run, i) => pick(run.latency) - pick(baseline.runs[i]!.latency)))
const gateway = scenarios.map((target) => ({
  scenario: target.name,
  ok: target.runs.reduce((sum, run) => sum + run.ok, 0),
  errors: target.runs.reduce((sum, run) => sum + run.errors, 0),
  p50: medianOf(target, (latency) => latency.p50),
  p90: medianOf(target, (latency) => latency.p90),
  p99: medianOf(target, (latency) => latency.p99),
  addedP50: target === baseline ? 0 : added(target, (latency) => latency.p50),
  addedP99: target === baseline ? 0 : added(target, (latency) => latency.p99),
  sendLagP99: Math.max(...target.runs.map((run) => run.sendLagP99 ?? 0)),
  runs: target.runs,
}))
const addedP99 = gateway[0]!.addedP99
const deletedKeys = await cleanUp()

const markdown = [
  `Admission checks against Redis (QuotaService.reserve: the user's and the global script in one pipeline, every limit set), 10,000 users:`,
  '',
  table(
    ['load', 'checks/s', 'errors', 'p50 ms', 'p99 ms', 'p99.9 ms'],
    [
      ...throughput.map((t) => [
        `${t.concurrency} concurrent`,
        t.perSecond,
        t.errors,
        ms(t.latency.p50),
        ms(t.latency.p99),
        ms(t.latency.p999),
      ]),
      [
        `${rate}/s fixed`,
        rate,
        atRate.errors,
        ms(atRate.latency.p50),
        ms(atRate.latency.p99),
        ms(atRate.latency.p999),
      ],
    ],
  ),
  '',
  `Gateway at ${rate} req/s with the in-process simulator (one process: load, gateway, simulator), median of ${rounds} interleaved ${roundS} s rounds; added = minus \`baseline\` in the same round:`,
  '',
  table(
    ['scenario', 'ok', 'errors', 'p50 ms', 'p90 ms', 'p99 ms', 'added p50 ms', 'added p99 ms'],
    gateway.map((g) => [
      g.scenario,
      g.ok,
      g.errors,
      ms(g.p50),
      ms(g.p90),
      ms(g.p99),
      delta(g.addedP50),
      delta(g.addedP99),
    ]),
  ),
  '',
  `Target (quotas on add < 0.5 ms at p99): ${addedP99 < 0.5 ? 'met' : 'not met'} (${delta(addedP99)} ms).` +
    (outages > 0
      ? ` Redis stopped answering in time ${outages} times during the run (the fallback decided meanwhile).`
      : ''),
]
await recording.write(
  {
    redisUrl,
    admissionChecks: { throughput, atRate },
    gateway: { rate, roundSeconds: roundS, rounds, scenarios: gateway },
    target: { addedP99BelowMs: 0.5, addedP99, met: addedP99 < 0.5 },
    redisOutages: outages,
    deletedKeys,
  },
  markdown.join('\n'),
)
