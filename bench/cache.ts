/**
 * Cache hit path benchmark: how long a cached answer takes through the gateway, next to a
 * bare HTTP round trip (a server answering the same bytes, doing nothing else) and a direct
 * call to the upstream (the simulator server), on the memory store and on Redis; and how many
 * hits per second the gateway serves. `bun bench/cache.ts`; writes bench/results/cache.json
 * and prints a Markdown table.
 *
 * Every server is its own process (this file, re-run with `--serve <role>`), so the load
 * generator never shares an event loop with what it measures. Latency is measured in the
 * open model: request i is due at start + i/rate and its latency counts from that due time,
 * so a stall delays (and is charged to) every request behind it. Throughput is a closed loop
 * of 32 workers. The gateway runs with every plugin on (auth, quota with limits set, cache,
 * ledger into a throwaway Postgres database).
 */
import { mkdir } from 'node:fs/promises'
import { cpus } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import postgres from 'postgres'

const RATE = Number(process.env.BENCH_RATE ?? 1000)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const CONCURRENCY = 32
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'
const POSTGRES_URL = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const ADMIN_KEY = 'bench-admin-key-0123456789'
const MODEL = 'bench-1'
const chatBody = JSON.stringify({
  model: MODEL,
  temperature: 0,
  max_tokens: 8,
  messages: [{ role: 'user', content: 'Say hello in eight words.' }],
})

interface Ready {
  url: string
  key?: string
}

/** `--serve <role>`: one server of the bench, announcing itself with one JSON line. */
async function serve(role: string, arg: string | undefined): Promise<void> {
  const { setLogLevel } = await import('../src/log')
  setLogLevel('silent')
  const announce = (ready: Ready) => console.log(JSON.stringify(ready))
  if (role === 'sim') {
    const { startSimServer } = await import('../src/upstream/sim-server')
    const sim = await startSimServer({ port: 0 })
    return announce({ url: sim.url.replace(/\/v1$/, '') })
  }
  if (role === 'bare') {
    const body = Buffer.from(arg ?? '', 'base64')
    const headers = { 'content-type': 'application/json' }
    const server = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => new Response(body, { headers }) })
    return announce({ url: `http://127.0.0.1:${server.port}` })
  }
  const { createApp } = await import('../src/app')
  const { buildConfig } = await import('../src/config')
  const { createRuntime } = await import('../src/runtime')
  const [store, simUrl, databaseUrl] = (arg ?? '').split(' ')
  const limits = { requests_per_minute: 1e8, requests_per_hour: 1e9, requests_per_day: 1e9 }
  const config = buildConfig(
    {
      ADMIN_API_KEY: ADMIN_KEY,
      DATABASE_URL: databaseUrl,
      ...(store === 'redis' ? { REDIS_URL } : {}),
    },
    {
      providers: { upstream: { type: 'openai', base_url: `${simUrl}/v1` } },
      models: {
        [MODEL]: { provider: 'upstream', upstream_model: 'sim-1', pricing: { input: 0.5, output: 1.5 } },
      },
      tiers: { enterprise: { ...limits, tokens_per_day: 1e12, cost_per_day_usd: 1e9, concurrent: 1e6 } },
      global: { concurrent: 1e6, requests_per_hour: 1e9, cost_per_day_usd: 1e9 },
      cache: { responses: { ttl_seconds: 600 }, stale_seconds: 0 },
    },
  )
  const runtime = await createRuntime(config)
  const { RedisStore } = await import('../plugins/store')
  if (runtime.store instanceof RedisStore && !(await runtime.store.waitUntilAvailable(5_000)))
    throw new Error(`Redis at ${REDIS_URL} does not answer`)
  const app = createApp(runtime).listen({ port: 0, hostname: '127.0.0.1' })
  const url = `http://127.0.0.1:${app.server!.port}`
  const created = await fetch(`${url}/admin/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: `bench-${store}`, name: 'bench', tier: 'enterprise' }),
  })
  announce({ url, key: ((await created.json()) as { key: string }).key })
}

const children = new Set<Subprocess>()
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

async function spawn(role: string, arg = ''): Promise<Ready> {
  const child = Bun.spawn(['bun', import.meta.path, '--serve', role, arg], {
    stdout: 'pipe',
    stderr: 'inherit',
  })
  children.add(child)
  const reader = child.stdout.getReader()
  let text = ''
  while (!text.includes('\n')) {
    const { value, done } = await reader.read()
    if (done) throw new Error(`bench server ${role} exited before it was ready`)
    text += new TextDecoder().decode(value)
  }
  reader.releaseLock()
  return JSON.parse(text.slice(0, text.indexOf('\n'))) as Ready
}

interface Target {
  name: string
  url: string
  headers: Record<string, string>
  body?: string
}

interface Run {
  target: string
  ok: number
  failed: number
  /** Answers per second over the run. */
  rate: number
  p50: number
  p90: number
  p99: number
  max: number
}

async function send(target: Target): Promise<boolean> {
  const response = await fetch(target.url, {
    method: target.body ? 'POST' : 'GET',
    headers: target.headers,
    body: target.body,
  })
  await response.arrayBuffer()
  return response.status === 200
}

function summarize(target: string, latencies: number[], failed: number, seconds: number): Run {
  const sorted = Float64Array.from(latencies).sort()
  const at = (q: number) => Math.round((sorted[Math.ceil(q * sorted.length) - 1] ?? 0) * 1000) / 1000
  const rate = Math.round(sorted.length / seconds)
  return { target, ok: sorted.length, failed, rate, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1) }
}

/** Fixed rate, latency from each request's due time. */
async function openLoop(target: Target, rate: number, seconds: number): Promise<Run> {
  const total = Math.round(rate * seconds)
  const latencies: number[] = []
  const pending: Array<Promise<void>> = []
  let failed = 0
  let next = 0
  const start = performance.now() + 5
  await new Promise<void>((resolve) => {
    const tick = () => {
      while (next < total && start + (next * 1000) / rate <= performance.now()) {
        const due = start + (next++ * 1000) / rate
        const record = (ok: boolean) => {
          if (ok) latencies.push(performance.now() - due)
          else failed++
        }
        pending.push(send(target).then(record, () => record(false)))
      }
      if (next >= total) resolve()
      else setTimeout(tick, Math.max(0, start + (next * 1000) / rate - performance.now()))
    }
    setTimeout(tick, 5)
  })
  await Promise.all(pending)
  return summarize(target.name, latencies, failed, (performance.now() - start) / 1000)
}

/** N workers back to back: the most answers per second. */
async function closedLoop(target: Target, concurrency: number, seconds: number): Promise<Run> {
  const latencies: number[] = []
  let failed = 0
  const start = performance.now()
  const end = start + seconds * 1000
  const worker = async () => {
    while (performance.now() < end) {
      const began = performance.now()
      if (await send(target).catch(() => false)) latencies.push(performance.now() - began)
      else failed++
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return summarize(target.name, latencies, failed, (performance.now() - start) / 1000)
}

async function main(): Promise<void> {
  const admin = postgres(POSTGRES_URL, { max: 1, onnotice: () => {} })
  const database = `bench_cache_${Date.now().toString(36)}`
  await admin.unsafe(`create database "${database}"`)
  const databaseUrl = POSTGRES_URL.replace(/\/[^/]*$/, `/${database}`)
  try {
    const sim = await spawn('sim')
    const memory = await spawn('gateway', `memory ${sim.url} ${databaseUrl}`)
    const redis = await spawn('gateway', `redis ${sim.url} ${databaseUrl}`)
    const hit = (name: string, gateway: Ready, stream = false): Target => ({
      name,
      url: `${gateway.url}/v1/chat/completions`,
      headers: { authorization: `Bearer ${gateway.key}`, 'content-type': 'application/json' },
      body: stream ? JSON.stringify({ ...JSON.parse(chatBody), stream: true }) : chatBody,
    })
    const targets = {
      memory: hit('hit, memory store', memory),
      redis: hit('hit, Redis', redis),
      redisStream: hit('hit replayed as SSE, Redis', redis, true),
    }
    let cachedBody = ''
    for (const target of Object.values(targets)) {
      await send(target)
      await Bun.sleep(100)
      const response = await fetch(target.url, { method: 'POST', headers: target.headers, body: target.body })
      if (response.headers.get('x-cache') !== 'HIT')
        throw new Error(`${target.name}: the entry was not cached`)
      if (!target.body?.includes('"stream"')) cachedBody = await response.text()
      else await response.arrayBuffer()
    }
    const bare = await spawn('bare', Buffer.from(cachedBody).toString('base64'))
    const baseline: Target = { name: 'bare HTTP round trip (same bytes)', url: bare.url, headers: {} }
    const direct: Target = {
      name: 'direct upstream call (simulator)',
      url: `${sim.url}/v1/chat/completions`,
      headers: { 'content-type': 'application/json' },
      body: chatBody,
    }
    const order = [baseline, direct, targets.memory, targets.redis, targets.redisStream]
    for (const target of order) await closedLoop(target, 8, 1)
    const latency: Run[] = []
    for (const target of order) latency.push(await openLoop(target, RATE, SECONDS))
    const throughput: Run[] = []
    for (const target of order) throughput.push(await closedLoop(target, CONCURRENCY, SECONDS))
    const added = (name: string) =>
      Math.round((latency.find((run) => run.target === name)!.p99 - latency[0]!.p99) * 1000) / 1000
    const result = {
      machine: {
        cores: cpus().length,
        cpu: cpus()[0]?.model ?? 'unknown',
        bun: Bun.version,
        date: new Date().toISOString(),
      },
      settings: { rate: RATE, seconds: SECONDS, concurrency: CONCURRENCY },
      latency,
      throughput,
      addedP99Ms: { memory: added(targets.memory.name), redis: added(targets.redis.name) },
      targetMet: added(targets.redis.name) < 1,
    }
    await mkdir(join(import.meta.dir, 'results'), { recursive: true })
    await Bun.write(join(import.meta.dir, 'results', 'cache.json'), `${JSON.stringify(result, null, 2)}\n`)
    console.log(table(result.latency, result.throughput, result.addedP99Ms))
  } finally {
    for (const child of children) child.kill('SIGKILL')
    await Promise.all([...children].map((child) => child.exited))
    await admin.unsafe(`drop database if exists "${database}" with (force)`)
    await admin.end()
  }
}

function table(latency: Run[], throughput: Run[], added: { memory: number; redis: number }): string {
  const rows = latency.map((run, i) => {
    const closed = throughput[i]!
    const failures = run.failed + closed.failed
    return `| ${run.target} | ${run.p50} | ${run.p90} | ${run.p99} | ${run.max} | ${closed.rate} | ${closed.p99} | ${failures} |`
  })
  return [
    `Open loop at ${RATE} req/s for ${SECONDS} s (ms, from the due time); closed loop of ${CONCURRENCY} workers for ${SECONDS} s.`,
    '',
    '| target | p50 | p90 | p99 | max | closed req/s | closed p99 | failed |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    `Added p99 over the bare round trip at ${RATE} req/s: memory ${added.memory} ms, Redis ${added.redis} ms (target: < 1 ms with Redis).`,
    `Machine: ${cpus().length} cores (${cpus()[0]?.model}), Bun ${Bun.version}.`,
  ].join('\n')
}

if (process.argv[2] === '--serve') await serve(process.argv[3]!, process.argv[4])
else await main()
