/**
 * The span tree built from an Exchange's phases, on a minimal app (the exchange and
 * observability plugins and one route that records what the pipeline records: auth, quota,
 * cache lookup, a failed attempt, its retry, an attempt on a fallback model). Each phase
 * becomes one child of the server span with the phase's own start and end; upstream attempts
 * are client spans with the GenAI attributes and whether they were a retry or a fallback.
 */
import { afterAll, expect, test } from 'bun:test'
import { SpanKind, SpanStatusCode } from '@opentelemetry/api'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { Elysia } from 'elysia'
import { type Exchange, exchange, SettlementHub } from '../plugins/exchange'
import { observability } from '../plugins/observability'
import { eventually } from './support/gateway'

const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
const hub = new SettlementHub()
const hrMs = ([seconds, nanos]: [number, number]) => seconds * 1000 + nanos / 1e6
let recorded: Exchange | undefined

const app = new Elysia()
  .use(exchange({ hub }))
  .use(observability({ hub, version: 'test', tracerProvider: provider, processMetrics: false }))
  .post('/v1/chat/completions', async ({ exchange }) => {
    recorded = exchange
    exchange.route = '/v1/chat/completions'
    exchange.requestedModel = 'big-1'
    exchange.principal = { keyId: 'k', userId: 'u', tier: 'pro', overrides: {} }
    const step = async (name: string, attributes: Record<string, string | number> = {}) => {
      const start = performance.now()
      await Bun.sleep(2)
      exchange.recordPhase(name, start, attributes)
    }
    await step('auth')
    await step('quota')
    await step('cache.lookup', { result: 'miss' })
    await step('upstream', { provider: 'openai', model: 'big-1', attempt: 1, error: 'http 503' })
    await step('upstream', { provider: 'openai', model: 'big-1', attempt: 2, error: 'http 503' })
    await step('upstream', { provider: 'sim', model: 'small-1', attempt: 1 })
    Object.assign(exchange, {
      servedModel: 'small-1',
      upstreamModel: 'small-1-v2',
      provider: 'sim',
      attempts: 3,
    })
    exchange.fallbackSteps = 1
    exchange.finishReasons = ['stop']
    exchange.usage = { promptTokens: 7, completionTokens: 9, cachedTokens: 0 }
    exchange.settle({ outcome: 'ok', status: 200 })
    return { ok: true }
  })
  .listen({ port: 0, hostname: '127.0.0.1' })

afterAll(async () => {
  await app.stop(true)
  await provider.shutdown()
})

test('each phase is a child span with its own times; attempts say retry and fallback', async () => {
  const response = await fetch(`http://127.0.0.1:${app.server!.port}/v1/chat/completions`, { method: 'POST' })
  expect(response.status).toBe(200)
  await eventually(() => exporter.getFinishedSpans().some((span) => span.kind === SpanKind.SERVER))
  const spans = exporter.getFinishedSpans()
  const root = spans.find((span) => span.kind === SpanKind.SERVER)!
  const children = spans.filter((span) => span !== root)
  expect(children.map((span) => span.name)).toEqual([
    'auth',
    'quota',
    'cache.lookup',
    'upstream',
    'upstream',
    'upstream',
    'settlement',
  ])
  for (const [i, child] of children.entries()) {
    expect(child.parentSpanContext?.spanId).toBe(root.spanContext().spanId)
    expect(child.spanContext().traceId).toBe(root.spanContext().traceId)
    expect(hrMs(child.startTime)).toBeGreaterThanOrEqual(hrMs(root.startTime))
    const phase = recorded!.phases[i]!
    expect(hrMs(child.endTime) - hrMs(child.startTime)).toBeCloseTo(phase.end - phase.start, 3)
  }
  const [auth, , lookup, first, retry, fallback, settlement] = children
  // The pipeline runs inside the request; settlement starts once the answer is complete and
  // may end after the response left, since it runs off the response's critical path.
  for (const step of children.slice(0, -1))
    expect(hrMs(step.endTime)).toBeLessThanOrEqual(hrMs(root.endTime) + 0.001)
  expect(hrMs(settlement!.startTime)).toBeGreaterThanOrEqual(hrMs(fallback!.endTime))
  expect(auth!.kind).toBe(SpanKind.INTERNAL)
  expect(hrMs(auth!.endTime) - hrMs(auth!.startTime)).toBeGreaterThanOrEqual(1.5)
  expect(lookup!.attributes.result).toBe('miss')
  for (const attempt of [first!, retry!, fallback!]) {
    expect(attempt.kind).toBe(SpanKind.CLIENT)
    expect(attempt.attributes['gen_ai.operation.name']).toBe('chat')
  }
  expect(first!.attributes).toMatchObject({
    'gen_ai.system': 'openai',
    'gen_ai.request.model': 'big-1',
    'tollgate.retry': false,
    'tollgate.fallback': false,
  })
  expect(first!.status).toEqual({ code: SpanStatusCode.ERROR, message: 'http 503' })
  expect(retry!.attributes).toMatchObject({ 'tollgate.retry': true, 'tollgate.fallback': false })
  expect(fallback!.attributes).toMatchObject({
    'gen_ai.system': 'sim',
    'gen_ai.request.model': 'small-1',
    'tollgate.retry': false,
    'tollgate.fallback': true,
  })
  expect(fallback!.status.code).toBe(SpanStatusCode.UNSET)
  expect(root.attributes).toMatchObject({
    'gen_ai.request.model': 'big-1',
    'gen_ai.response.model': 'small-1-v2',
    'gen_ai.usage.input_tokens': 7,
    'gen_ai.usage.output_tokens': 9,
    'gen_ai.response.finish_reasons': ['stop'],
    'tollgate.attempts': 3,
    'tollgate.fallback_steps': 1,
  })
})
