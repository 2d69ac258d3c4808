/**
 * What a breaker costs on the request path, with state shared through Redis as in
 * production: the check on a closed breaker, the rejection by an open one, and the whole
 * rejected call through the resilience layer (the 503 a client gets while every target is
 * open). The store is wrapped to count commands, proving none is sent while state is cached;
 * a Redis PING gives the round trip they avoid. Needs Redis on 127.0.0.1:6379.
 *
 *   bun run bench/breaker.ts [iterations]
 *
 * Writes bench/results/breaker.json and prints a Markdown table.
 */
import { mkdir } from 'node:fs/promises'
import { createBreakers } from '../plugins/breaker'
import { ApiError, Exchange, freePrice, SettlementHub } from '../plugins/exchange'
import { RedisStore, type Store } from '../plugins/store'
import { breakerTarget, buildConfig } from '../src/config'
import { Resilience } from '../src/upstream/resilient'
import { createProviders, ModelRouter } from '../src/upstream/router'

const iterations = Number(process.argv[2] ?? 100_000)
const warmup = Math.min(10_000, iterations)

interface Row {
  case: string
  iterations: number
  p50_us: number
  p99_us: number
  max_us: number
  store_commands: number
}

/** Counts every command that reaches the store while the wrapped store serves the breakers. */
function counting(store: RedisStore): { store: Store; commands: () => number } {
  let commands = 0
  const counted = new Proxy(store, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver)
      if (typeof value !== 'function' || !['run', 'get', 'set', 'del', 'incr'].includes(String(property)))
        return typeof value === 'function' ? value.bind(target) : value
      return (...args: unknown[]) => {
        commands++
        return value.apply(target, args)
      }
    },
  })
  return { store: counted, commands: () => commands }
}

async function measure(name: string, commands: () => number, op: () => Promise<unknown>): Promise<Row> {
  for (let i = 0; i < warmup; i++) await op()
  const before = commands()
  const samples = new Float64Array(iterations)
  for (let i = 0; i < iterations; i++) {
    const started = Bun.nanoseconds()
    await op()
    samples[i] = Bun.nanoseconds() - started
  }
  samples.sort()
  const at = (q: number) =>
    Math.round(samples[Math.min(iterations - 1, Math.floor(q * iterations))]! / 10) / 100
  return {
    case: name,
    iterations,
    p50_us: at(0.5),
    p99_us: at(0.99),
    max_us: at(1),
    store_commands: commands() - before,
  }
}

const redis = new RedisStore({
  url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  keyPrefix: `tg-bench:${process.pid}:`,
})
if (!(await redis.waitUntilAvailable(2000))) throw new Error('Redis is not answering on 127.0.0.1:6379')
const { store, commands } = counting(redis)

const config = buildConfig(
  {},
  {
    providers: { up: { type: 'openai', base_url: 'http://127.0.0.1:9/v1' } },
    models: {
      'bench-open': { provider: 'up', pricing: { input: 1, output: 1 }, fallbacks: ['bench-open-2'] },
      'bench-open-2': { provider: 'up', pricing: { input: 1, output: 1 } },
      'bench-closed': { provider: 'up', pricing: { input: 1, output: 1 } },
    },
  },
)
// No background refresh during the measurement: the point is what a request itself costs.
const breakers = createBreakers({
  store,
  policy: config.breaker.policy,
  targets: config.breaker.targets,
  syncIntervalMs: 0,
})
const router = new ModelRouter(config.models, createProviders(config.providers))
const resilience = new Resilience({
  router,
  breakers,
  models: config.breaker.models,
  priceOf: () => freePrice,
  staleCache: false,
})
const [closed, open, open2] = ['bench-closed', 'bench-open', 'bench-open-2'].map((name) =>
  breakerTarget(config.models[name]!),
) as [string, string, string]
for (const target of [open, open2])
  for (let i = 0; i < config.breaker.policy.failureThreshold; i++)
    breakers.record(target, 'f', false, 'http 503')
await breakers.refresh()
if (breakers.view(open).state !== 'open') throw new Error('the bench breaker did not open')

const hub = new SettlementHub()
const signal = new AbortController().signal
const request = { model: 'bench-open', messages: [{ role: 'user', content: 'hi' }] }
const rejected = async () => {
  const exchange = new Exchange(hub, { id: 'bench', method: 'POST', path: '/v1/chat/completions' })
  try {
    await resilience.chat(exchange, request, { signal })
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 503) throw error
    return
  }
  throw new Error('expected a 503')
}

const rows = [
  await measure('check, closed breaker (cached)', commands, () => breakers.admit(closed, 60_000)),
  await measure('rejection, open breaker', commands, () => breakers.admit(open, 60_000)),
  await measure('rejected call, primary + fallback open -> 503', commands, rejected),
]
const pings: number[] = []
for (let i = 0; i < 1000; i++) pings.push(await redis.ping())
pings.sort((a, b) => a - b)
const redisRoundTrip = {
  p50_us: Math.round(pings[500]! * 100_000) / 100,
  p99_us: Math.round(pings[990]! * 100_000) / 100,
}

const result = {
  benchmark: 'breaker',
  at: new Date().toISOString(),
  bun: Bun.version,
  store: 'redis (shared state), background refresh off',
  note: 'per-call latency including the timer overhead (~0.03 us); store_commands counts commands sent during the timed calls',
  rows,
  redis_round_trip: redisRoundTrip,
}
await mkdir(new URL('./results/', import.meta.url), { recursive: true })
await Bun.write(new URL('./results/breaker.json', import.meta.url), `${JSON.stringify(result, null, 2)}\n`)

console.log('| case | iterations | p50 (µs) | p99 (µs) | max (µs) | store commands |')
console.log('| --- | ---: | ---: | ---: | ---: | ---: |')
for (const row of rows)
  console.log(
    `| ${row.case} | ${row.iterations} | ${row.p50_us} | ${row.p99_us} | ${row.max_us} | ${row.store_commands} |`,
  )
console.log(
  `| Redis PING round trip (for scale) | 1000 | ${redisRoundTrip.p50_us} | ${redisRoundTrip.p99_us} | | 1 each |`,
)

await breakers.resetAll()
await breakers.close()
await redis.close()
