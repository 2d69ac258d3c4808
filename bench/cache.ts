/**
 * Cache hit path benchmark: how long a cached answer takes through the gateway, next to a
 * bare HTTP round trip (a server answering the same bytes, doing nothing else) and a direct
 * call to the upstream (the simulator server), on the memory store and on Redis; and how many
 * hits per second the gateway serves. `bun bench/cache.ts`; writes bench/results/cache.json
 * and prints a Markdown table.
 *
 * Every server is its own process (bench/cache-servers.ts), so the load generator never
 * shares an event loop with what it measures. Latency is measured in the open model: request
 * i is due at start + i/rate and its latency counts from that due time, so a stall delays
 * (and is charged to) every request behind it. Throughput is a closed loop of 32 workers.
 * The gateway runs with every plugin on (auth, quota with limits set, cache, ledger into a
 * throwaway Postgres database). Last, the cache alone (bench/cache-lookup.ts): what a hit
 * costs beyond the request the gateway serves anyway.
 *
 * Environment: BENCH_REDIS_URL (default redis://127.0.0.1:6379; a private redis-server keeps
 * other traffic out of the numbers), BENCH_POSTGRES_URL (a server where a throwaway database
 * may be created), BENCH_RATE (1000) and BENCH_SECONDS (5).
 */
import { mkdir } from 'node:fs/promises'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import postgres from 'postgres'
import { type LookupRun, lookupAlone } from './cache-lookup'
import { MODEL, REDIS_URL, type Ready } from './cache-servers'

const RATE = Number(process.env.BENCH_RATE ?? 1000)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const CONCURRENCY = 32
const POSTGRES_URL = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const chatBody = JSON.stringify({
  model: MODEL,
  temperature: 0,
  max_tokens: 8,
  messages: [{ role: 'user', content: 'Say hello in eight words.' }],
})

interface Server extends Ready {
  pid: number
}

const children = new Set<Subprocess>()
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

async function spawn(role: string, arg = ''): Promise<Server> {
  const child = Bun.spawn(['bun', join(import.meta.dir, 'cache-servers.ts'), role, arg], {
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
  return { ...(JSON.parse(text.slice(0, text.indexOf('\n'))) as Ready), pid: child.pid }
}

/** CPU time a process has used so far, in µs (utime + stime of /proc/<pid>/stat). */
async function cpuMicros(pid: number): Promise<number> {
  const stat = await Bun.file(`/proc/${pid}/stat`).text()
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // Fields 14 and 15 of the file (utime, stime), in clock ticks of 10 ms on Linux.
  return (Number(fields[11]) + Number(fields[12])) * 10_000
}

interface Target {
  name: string
  url: string
  headers: Record<string, string>
  body?: string
  /** The process that answers it, whose CPU time per request is measured. */
  server: Server
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
  /** CPU time of the answering process per request, in µs: independent of how busy the machine is. */
  serverCpuUs: number
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

function summarize(target: string, latencies: number[], failed: number, seconds: number, cpuUs: number): Run {
  const sorted = Float64Array.from(latencies).sort()
  const at = (q: number) => Math.round((sorted[Math.ceil(q * sorted.length) - 1] ?? 0) * 1000) / 1000
  const rate = Math.round(sorted.length / seconds)
  const serverCpuUs = Math.round(cpuUs / Math.max(1, sorted.length + failed))
  return {
    target,
    ok: sorted.length,
    failed,
    rate,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: at(1),
    serverCpuUs,
  }
}

/** Fixed rate, latency from each request's due time. */
async function openLoop(target: Target, rate: number, seconds: number): Promise<Run> {
  const total = Math.round(rate * seconds)
  const cpuBefore = await cpuMicros(target.server.pid)
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
  const cpu = (await cpuMicros(target.server.pid)) - cpuBefore
  return summarize(target.name, latencies, failed, (performance.now() - start) / 1000, cpu)
}

/** N workers back to back: the most answers per second. */
async function closedLoop(target: Target, concurrency: number, seconds: number): Promise<Run> {
  const latencies: number[] = []
  let failed = 0
  const cpuBefore = await cpuMicros(target.server.pid)
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
  const cpu = (await cpuMicros(target.server.pid)) - cpuBefore
  return summarize(target.name, latencies, failed, (performance.now() - start) / 1000, cpu)
}

async function main(): Promise<void> {
  // On a shared machine the numbers mean little without this next to them.
  const loadAtStart = loadavg()[0] ?? 0
  const admin = postgres(POSTGRES_URL, { max: 1, onnotice: () => {} })
  const database = `bench_cache_${Date.now().toString(36)}`
  await admin.unsafe(`create database "${database}"`)
  const databaseUrl = POSTGRES_URL.replace(/\/[^/]*$/, `/${database}`)
  try {
    const sim = await spawn('sim')
    const memory = await spawn('gateway', `memory ${sim.url} ${databaseUrl}`)
    const redis = await spawn('gateway', `redis ${sim.url} ${databaseUrl}`)
    const hit = (name: string, gateway: Server, stream = false): Target => ({
      name,
      server: gateway,
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
    const baseline: Target = {
      name: 'bare HTTP round trip (same bytes)',
      url: bare.url,
      headers: {},
      server: bare,
    }
    const direct: Target = {
      name: 'direct upstream call (simulator)',
      server: sim,
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
    const lookups = [await lookupAlone('memory', REDIS_URL), await lookupAlone('redis', REDIS_URL)]
    const added = (name: string) =>
      Math.round((latency.find((run) => run.target === name)!.p99 - latency[0]!.p99) * 1000) / 1000
    const result = {
      machine: {
        cores: cpus().length,
        cpu: cpus()[0]?.model ?? 'unknown',
        bun: Bun.version,
        date: new Date().toISOString(),
        loadAverageAtStart: loadAtStart,
        loadAverageAtEnd: loadavg()[0] ?? 0,
      },
      settings: { rate: RATE, seconds: SECONDS, concurrency: CONCURRENCY, redisUrl: REDIS_URL },
      latency,
      throughput,
      lookups,
      addedP99Ms: { memory: added(targets.memory.name), redis: added(targets.redis.name) },
      targetMet: added(targets.redis.name) < 1,
    }
    await mkdir(join(import.meta.dir, 'results'), { recursive: true })
    await Bun.write(join(import.meta.dir, 'results', 'cache.json'), `${JSON.stringify(result, null, 2)}\n`)
    console.log(table(result.latency, result.throughput, result.addedP99Ms))
    console.log(lookupTable(lookups))
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
    const cells = [run.p50, run.p90, run.p99, run.max, run.serverCpuUs, closed.rate, closed.p99, failures]
    return `| ${run.target} | ${cells.join(' | ')} |`
  })
  return [
    `Open loop at ${RATE} req/s for ${SECONDS} s (ms, from the due time); closed loop of ${CONCURRENCY} workers for ${SECONDS} s.`,
    '',
    '| target | p50 | p90 | p99 | max | server CPU µs/req | closed req/s | closed p99 | failed |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    `Added p99 over the bare round trip at ${RATE} req/s: memory ${added.memory} ms, Redis ${added.redis} ms (target: < 1 ms with Redis).`,
    `Machine: ${cpus().length} cores (${cpus()[0]?.model}), Bun ${Bun.version}, load average ${loadavg()[0]?.toFixed(2)} at the end.`,
  ].join('\n')
}

function lookupTable(runs: LookupRun[]): string {
  return [
    '',
    'The cache alone (lookup + claim of a stored answer, in process, one at a time):',
    '',
    '| store | p50 µs | p99 µs | CPU µs/lookup |',
    '| --- | ---: | ---: | ---: |',
    ...runs.map((run) => `| ${run.store} | ${run.p50Us} | ${run.p99Us} | ${run.cpuUs} |`),
  ].join('\n')
}

await main()
