/**
 * Traces of the real gateway, with the OpenTelemetry SDK registered globally and an
 * in-memory exporter: one trace per request, rooted in a server span whose children are
 * the Exchange's phases; the GenAI attributes of the call; an incoming `traceparent` is
 * continued and the context upstream calls carry belongs to the same trace. With no SDK
 * behind the API, nothing is recorded and nothing is added to upstream calls.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import type { Exchange } from '../plugins/exchange'
import { startSimServer } from '../src/upstream/sim-server'
import { requirePostgres } from './support/db'
import { eventually, type Gateway, startGateway } from './support/gateway'

const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
const pricing = { input: 2, output: 3 }
let sim: Awaited<ReturnType<typeof startSimServer>>
let gateway: Gateway
let key: string

async function startTestGateway(): Promise<Gateway> {
  return startGateway({
    env: { DATABASE_URL: await requirePostgres() },
    file: {
      providers: { remote: { type: 'openai', base_url: sim.url } },
      models: { 'remote-1': { provider: 'remote', upstream_model: 'sim-1', pricing } },
      tiers: { tiny: { tokens_per_day: 1 } },
    },
  })
}

beforeAll(async () => {
  // Registered before the gateway is built, which picks up the global provider.
  trace.setGlobalTracerProvider(provider)
  sim = await startSimServer()
  gateway = await startTestGateway()
  key = await gateway.createKey(undefined, 'pro')
})

afterAll(async () => {
  await gateway?.stop()
  await sim?.stop()
  await provider.shutdown()
  // Later test files build gateways of their own: they must find the API a no-op again.
  trace.disable()
})

async function chat(requestId: string, headers: Record<string, string> = {}, body: object = {}) {
  const response = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': 'application/json',
      'x-request-id': requestId,
      ...headers,
    },
    body: JSON.stringify({ model: 'remote-1', messages: [{ role: 'user', content: 'hi' }], ...body }),
  })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

/** The finished spans of the trace whose server span carries `requestId`. */
async function traceOf(requestId: string): Promise<{ root: ReadableSpan; spans: ReadableSpan[] }> {
  let root: ReadableSpan | undefined
  await eventually(() => {
    root = exporter.getFinishedSpans().find((span) => span.attributes['tollgate.request_id'] === requestId)
    return root !== undefined
  })
  const traceId = root!.spanContext().traceId
  return {
    root: root!,
    spans: exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId),
  }
}

const exchangeOf = (requestId: string): Exchange => gateway.settled.find((e) => e.id === requestId)!

describe('with the SDK registered', () => {
  test('one trace per request: a server span whose children are the pipeline phases', async () => {
    const ids = ['trace-one-0001', 'trace-two-0002']
    for (const id of ids) expect((await chat(id)).status).toBe(200)
    const traces = await Promise.all(ids.map(traceOf))
    expect(new Set(traces.map((t) => t.root.spanContext().traceId)).size).toBe(2)
    for (const [i, { root, spans }] of traces.entries()) {
      expect(root.name).toBe('POST /v1/chat/completions')
      expect(root.kind).toBe(SpanKind.SERVER)
      expect(root.parentSpanContext).toBeUndefined()
      const children = spans.filter((span) => span !== root)
      for (const child of children) expect(child.parentSpanContext?.spanId).toBe(root.spanContext().spanId)
      const phases = exchangeOf(ids[i]!).phases
      expect(children.map((span) => span.name).sort()).toEqual(phases.map((phase) => phase.name).sort())
      expect(phases.map((phase) => phase.name)).toContain('settlement')
    }
  })

  test('the server span carries the GenAI and tollgate attributes of the call', async () => {
    const { body } = await chat('trace-attrs-0003')
    const usage = body.usage as { prompt_tokens: number; completion_tokens: number }
    const { root } = await traceOf('trace-attrs-0003')
    const exchange = exchangeOf('trace-attrs-0003')
    expect(root.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/v1/chat/completions',
      'http.response.status_code': 200,
      'gen_ai.operation.name': 'chat',
      'gen_ai.system': 'remote',
      'gen_ai.request.model': 'remote-1',
      'gen_ai.response.model': 'sim-1',
      'gen_ai.usage.input_tokens': usage.prompt_tokens,
      'gen_ai.usage.output_tokens': usage.completion_tokens,
      'gen_ai.response.finish_reasons': exchange.finishReasons,
      'tollgate.cache': 'BYPASS',
      'tollgate.tier': 'pro',
      'tollgate.outcome': 'ok',
    })
    const expectedCost =
      (usage.prompt_tokens * pricing.input + usage.completion_tokens * pricing.output) / 1e6
    expect(root.attributes['tollgate.cost_usd']).toBeCloseTo(expectedCost, 12)
    expect(exchange.finishReasons.length).toBeGreaterThan(0)
    expect(root.status.code).toBe(SpanStatusCode.UNSET)
  })

  test('an incoming traceparent is continued, and upstream calls carry the same trace', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
    const parentId = '00f067aa0ba902b7'
    await chat('trace-parent-0004', { traceparent: `00-${traceId}-${parentId}-01` })
    const { root } = await traceOf('trace-parent-0004')
    expect(root.spanContext().traceId).toBe(traceId)
    expect(root.parentSpanContext?.spanId).toBe(parentId)
    expect(exchangeOf('trace-parent-0004').upstreamHeaders.traceparent).toBe(
      `00-${traceId}-${root.spanContext().spanId}-01`,
    )
  })

  test('a request denied before settling still gets its server span, marked by status', async () => {
    const tiny = await gateway.createKey(undefined, 'tiny')
    const response = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${tiny}`,
        'content-type': 'application/json',
        'x-request-id': 'trace-429-0005',
      },
      body: JSON.stringify({ model: 'remote-1', messages: [{ role: 'user', content: 'hi' }] }),
    })
    expect(response.status).toBe(429)
    const { root, spans } = await traceOf('trace-429-0005')
    expect(root.attributes['http.response.status_code']).toBe(429)
    expect(root.attributes['gen_ai.request.model']).toBe('remote-1')
    expect(spans.map((span) => span.name)).not.toContain('settlement')
  })

  test('probes and scrapes are not traced', async () => {
    const before = exporter.getFinishedSpans().length
    await fetch(`${gateway.url}/health/live`)
    await fetch(`${gateway.url}/metrics`)
    await Bun.sleep(20)
    expect(exporter.getFinishedSpans().length).toBe(before)
  })
})

test('with no SDK the API is a no-op: nothing recorded, no traceparent upstream', async () => {
  trace.disable()
  const plain = await startTestGateway()
  try {
    const apiKey = await plain.createKey(undefined, 'pro')
    const before = exporter.getFinishedSpans().length
    const response = await fetch(`${plain.url}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${apiKey}`,
        'content-type': 'application/json',
        traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      },
      body: JSON.stringify({ model: 'remote-1', messages: [{ role: 'user', content: 'hi' }] }),
    })
    expect(response.status).toBe(200)
    await eventually(() => plain.settled.length === 1)
    expect(plain.settled[0]!.upstreamHeaders).toEqual({ 'x-request-id': plain.settled[0]!.id })
    expect(exporter.getFinishedSpans().length).toBe(before)
  } finally {
    await plain.stop()
  }
})
