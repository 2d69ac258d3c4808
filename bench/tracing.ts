/**
 * What tracing costs when it is off. `bun bench/tracing.ts`; writes bench/results/tracing.json
 * and .md. Two measurements:
 *
 * 1. The tracing work of one request, in a tight loop: exactly the calls the observability
 *    plugin makes (extract the incoming context, start the server span, name and end it with
 *    the Exchange's attributes and phases), with OTEL unset (the API's no-op) and, for scale,
 *    with the SDK recording every span into a no-op exporter. Against an empty loop.
 * 2. Request latency over HTTP through a minimal pipeline (the exchange plugin and a route
 *    that records four phases and settles): without the observability plugin, with it and
 *    OTEL unset, and with the SDK recording. Closed loop of 8 workers, variants interleaved
 *    round by round so each is measured under the same machine conditions. The load
 *    generator shares the process, so CPU µs/req covers client and server: only the
 *    differences between variants mean something.
 */
import { type TracerProvider, trace } from '@opentelemetry/api'
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import { Elysia } from 'elysia'
import { Exchange, exchange, SettlementHub } from '../plugins/exchange'
import { observability } from '../plugins/observability'
import { RequestTracer } from '../plugins/observability/tracing'
import { summarize } from './lib/load'
import { ms, startRecording, table } from './lib/report'

const ROUNDS = 3
const ROUND_SECONDS = Number(process.env.BENCH_SECONDS ?? 10) / ROUNDS
const WORKERS = 8
const LOOP = 200_000

/** Drops every span: what is measured is the SDK's recording, not an export. */
const dropAll: SpanExporter = { export: (_spans, done) => done({ code: 0 }), shutdown: async () => {} }
const recording = () =>
  new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(dropAll, { maxQueueSize: 100_000 })] })

/** What the model route of this bench does to its Exchange: a routed request with four phases. */
function fillModelRequest(current: Exchange): void {
  Object.assign(current, {
    route: '/v1/chat/completions',
    requestedModel: 'm',
    servedModel: 'm',
    provider: 'sim',
  })
  for (const name of ['auth', 'quota', 'cache.lookup', 'upstream'])
    current.recordPhase(name, performance.now())
}

function sampleExchange(hub: SettlementHub): Exchange {
  const current = new Exchange(hub, {
    id: 'bench-request-0001',
    method: 'POST',
    path: '/v1/chat/completions',
  })
  fillModelRequest(current)
  current.settle({ outcome: 'ok', status: 200 })
  return current
}

/** ns per request of the plugin's tracing calls. */
function tracingLoop(provider: TracerProvider | null): number {
  const tracer = provider ? new RequestTracer(provider, 'bench') : null
  const request = new Request('http://bench/v1/chat/completions', { method: 'POST' })
  const current = sampleExchange(new SettlementHub())
  const end = { method: 'POST', route: '/v1/chat/completions', status: 200, end: 0, exchange: current }
  const run = (count: number) => {
    const started = performance.now()
    for (let i = 0; i < count; i++) {
      if (!tracer) continue
      const span = tracer.start(request, '/v1/chat/completions', started)
      if (span) {
        tracer.propagate(span, current)
        tracer.finish(span, { ...end, end: performance.now() })
      }
    }
    return ((performance.now() - started) * 1e6) / count
  }
  run(LOOP / 10)
  return run(LOOP)
}

type Variant = 'no observability plugin' | 'observability, OTEL unset' | 'observability, SDK recording'

function startApp(variant: Variant): { url: string; stop: () => Promise<void> } {
  const hub = new SettlementHub()
  const spine = exchange({ hub })
  const tracerProvider = variant === 'observability, SDK recording' ? recording() : trace.getTracerProvider()
  const routes = new Elysia().use(spine).post('/v1/chat/completions', ({ exchange: current }) => {
    fillModelRequest(current)
    current.usage = { promptTokens: 5, completionTokens: 7, cachedTokens: 0 }
    current.settle({ outcome: 'ok', status: 200 })
    return { id: current.id, choices: [] }
  })
  const server = new Elysia()
    .use(spine)
    .use(
      variant === 'no observability plugin'
        ? new Elysia()
        : observability({ hub, version: 'bench', tracerProvider, processMetrics: false }),
    )
    .use(routes)
    .listen({ port: 0, hostname: '127.0.0.1' })
  return {
    url: `http://127.0.0.1:${server.server!.port}/v1/chat/completions`,
    stop: async () => {
      await server.stop(true)
    },
  }
}

async function load(url: string, seconds: number): Promise<{ latencies: number[]; cpuUs: number }> {
  const latencies: number[] = []
  const cpu = process.cpuUsage()
  const until = performance.now() + seconds * 1000
  const body = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] })
  const worker = async () => {
    while (performance.now() < until) {
      const started = performance.now()
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      })
      await response.arrayBuffer()
      latencies.push(performance.now() - started)
    }
  }
  await Promise.all(Array.from({ length: WORKERS }, worker))
  const used = process.cpuUsage(cpu)
  return { latencies, cpuUs: (used.user + used.system) / latencies.length }
}

const recorder = startRecording('tracing', 'tracing: what it costs when OTEL is unset')
const loops = {
  'empty loop': tracingLoop(null),
  'OTEL unset (API no-op)': tracingLoop(trace.getTracerProvider()),
  'SDK recording, spans dropped': tracingLoop(recording()),
}
for (const [name, ns] of Object.entries(loops)) console.log(`${name.padEnd(32)} ${ns.toFixed(0)} ns/request`)

const variants: Variant[] = [
  'no observability plugin',
  'observability, OTEL unset',
  'observability, SDK recording',
]
const samples = new Map<Variant, { latencies: number[]; cpuUs: number[] }>(
  variants.map((v) => [v, { latencies: [], cpuUs: [] }]),
)
for (let round = 0; round <= ROUNDS; round++) {
  for (const variant of variants) {
    const app = startApp(variant)
    // Round 0 only warms every variant up (JIT, connection pool); it is not counted.
    const result = await load(app.url, round === 0 ? 1 : ROUND_SECONDS)
    await app.stop()
    if (round === 0) continue
    samples.get(variant)!.latencies.push(...result.latencies)
    samples.get(variant)!.cpuUs.push(result.cpuUs)
    console.log(
      `round ${round} ${variant.padEnd(30)} ${result.latencies.length} requests, ${result.cpuUs.toFixed(0)} µs CPU/req`,
    )
  }
}

const rows = variants.map((variant) => {
  const { latencies, cpuUs } = samples.get(variant)!
  const { p50, p99 } = summarize(latencies)
  const cpu = cpuUs.reduce((a, b) => a + b, 0) / cpuUs.length
  return {
    variant,
    requests: latencies.length,
    perSecond: Math.round(latencies.length / (ROUND_SECONDS * ROUNDS)),
    p50,
    p99,
    cpuUs: Math.round(cpu),
  }
})

await recorder.write(
  { loops, http: rows, rounds: ROUNDS, roundSeconds: ROUND_SECONDS, workers: WORKERS },
  [
    `Per request, the plugin's tracing calls in a loop of ${LOOP.toLocaleString('en')}:`,
    '',
    table(
      ['tracing', 'ns/request'],
      Object.entries(loops).map(([name, ns]) => [name, Math.round(ns)]),
    ),
    '',
    `HTTP through a minimal pipeline (closed loop of ${WORKERS} workers, ${ROUNDS} interleaved rounds of ${ROUND_SECONDS.toFixed(1)} s; load generator in the same process):`,
    '',
    table(
      ['variant', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'CPU µs/req (client + server)'],
      rows.map((r) => [r.variant, r.requests, r.perSecond, ms(r.p50), ms(r.p99), r.cpuUs]),
    ),
  ].join('\n'),
)
