/**
 * The rest of the observability plugin: one JSON line per request (after a stream's end,
 * with its usage and cost; probes at debug; never a prompt or a key unless bodies are
 * turned on), the bearer protection of `/metrics`, the config section, and spans leaving
 * over OTLP/HTTP when an endpoint is configured.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { Elysia, sse } from 'elysia'
import { type Exchange, exchange, priceFromUsdPerMillion, SettlementHub } from '../plugins/exchange'
import { observability, type RequestLogger } from '../plugins/observability'
import { buildConfig, ConfigError } from '../src/config'
import { requirePostgres } from './support/db'
import { eventually, startGateway } from './support/gateway'

interface Line {
  level: 'info' | 'debug'
  fields: Record<string, unknown>
}

function capture(): { log: RequestLogger; lines: Line[] } {
  const lines: Line[] = []
  return {
    lines,
    log: {
      info: (_msg, fields) => lines.push({ level: 'info', fields }),
      debug: (_msg, fields) => lines.push({ level: 'debug', fields }),
    },
  }
}

function modelRequest(current: Exchange, stream: boolean) {
  current.route = '/v1/chat/completions'
  current.requestedModel = 'm-1'
  current.servedModel = 'm-1'
  current.stream = stream
  current.principal = { keyId: 'k', userId: 'alice', tier: 'pro', overrides: {} }
  current.price = priceFromUsdPerMillion({ input: 1, output: 2 })
  current.usage = { promptTokens: 3, completionTokens: 4, cachedTokens: 0 }
}

function testApp(logBodies: boolean) {
  const hub = new SettlementHub()
  const { log, lines } = capture()
  const app = new Elysia()
    .use(exchange({ hub }))
    .use(observability({ hub, version: 'test', log, logBodies, processMetrics: false }))
    .post('/v1/chat/completions', ({ exchange: current }) => {
      modelRequest(current, false)
      current.settle({ outcome: 'ok', status: 200 })
      return { answer: 'secret completion' }
    })
    .post('/v1/stream', async function* ({ exchange: current }) {
      modelRequest(current, true)
      for (let i = 0; i < 3; i++) {
        await Bun.sleep(15)
        current.markFirstToken()
        yield sse({ data: `chunk ${i}` })
      }
      current.settle({ outcome: 'ok', status: 200 })
    })
    .get('/health/live', () => ({ status: 'ok' }))
    .listen({ port: 0, hostname: '127.0.0.1' })
  return { url: `http://127.0.0.1:${app.server!.port}`, lines, stop: () => app.stop(true) }
}

const post = (url: string, body: unknown) =>
  fetch(url, {
    method: 'POST',
    headers: { authorization: 'Bearer tg-very-secret-key', 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })

describe('request log', () => {
  const app = testApp(false)
  afterAll(() => app.stop())

  test('one info line per request with ids, route, status, model, tier, latency, cache, tokens, cost', async () => {
    const response = await post(`${app.url}/v1/chat/completions`, { prompt: 'secret prompt' })
    await response.text()
    await eventually(() => app.lines.length === 1)
    const [line] = app.lines
    expect(line!.level).toBe('info')
    expect(line!.fields).toMatchObject({
      request_id: response.headers.get('x-request-id'),
      method: 'POST',
      route: '/v1/chat/completions',
      status: 200,
      model: 'm-1',
      tier: 'pro',
      cache: 'NONE',
      outcome: 'ok',
      prompt_tokens: 3,
      completion_tokens: 4,
      cost_usd: '0.000011',
    })
    expect(line!.fields.latency_ms).toBeNumber()
    const text = JSON.stringify(line)
    for (const secret of ['secret prompt', 'secret completion', 'tg-very-secret-key', 'alice'])
      expect(text).not.toContain(secret)
  })

  test("a stream's line is written at its end and times the whole stream", async () => {
    app.lines.length = 0
    const response = await post(`${app.url}/v1/stream`, {})
    expect(await response.text()).toContain('chunk 2')
    await eventually(() => app.lines.length === 1)
    expect(app.lines[0]!.fields).toMatchObject({
      route: '/v1/stream',
      stream: true,
      outcome: 'ok',
      prompt_tokens: 3,
    })
    expect(app.lines[0]!.fields.latency_ms as number).toBeGreaterThanOrEqual(40)
    expect(app.lines[0]!.fields.ttft_ms).toBeNumber()
  })

  test('probes are logged at debug; unmatched paths get their own line', async () => {
    app.lines.length = 0
    await (await fetch(`${app.url}/health/live`)).text()
    await (await fetch(`${app.url}/no/such/path`)).text()
    await eventually(() => app.lines.length === 2)
    expect(app.lines.map((line) => [line.level, line.fields.route, line.fields.status])).toEqual([
      ['debug', '/health/live', 200],
      ['info', 'unmatched', 404],
    ])
  })
})

test('with logBodies the request body and the answer are logged, for debugging', async () => {
  const app = testApp(true)
  try {
    await (await post(`${app.url}/v1/chat/completions`, { prompt: 'secret prompt' })).text()
    await eventually(() => app.lines.length === 1)
    expect(app.lines[0]!.fields.request_body).toEqual({ prompt: 'secret prompt' })
    expect(app.lines[0]!.fields.response_body).toEqual({ answer: 'secret completion' })
    expect(JSON.stringify(app.lines[0])).not.toContain('tg-very-secret-key')
  } finally {
    await app.stop()
  }
})

test('GET /metrics answers 401 without the configured bearer token, and the text with it', async () => {
  const gateway = await startGateway({
    env: { DATABASE_URL: await requirePostgres(), TEST_METRICS_TOKEN: 'scrape-token-123' },
    file: { observability: { metrics: { bearer_token_env: 'TEST_METRICS_TOKEN' } } },
  })
  try {
    const scrape = (token?: string) =>
      fetch(`${gateway.url}/metrics`, token ? { headers: { authorization: `Bearer ${token}` } } : {})
    const missing = await scrape()
    expect(missing.status).toBe(401)
    expect(missing.headers.get('content-type')).toBe('application/problem+json')
    expect(missing.headers.get('www-authenticate')).toBe('Bearer')
    expect((await scrape('scrape-token-12')).status).toBe(401)
    const allowed = await scrape('scrape-token-123')
    expect(allowed.status).toBe(200)
    expect(await allowed.text()).toContain('tollgate_build_info')
  } finally {
    await gateway.stop()
  }
})

describe('config: observability', () => {
  test('defaults: open metrics, request logs without bodies, tracing off', () => {
    expect(buildConfig({}).observability).toEqual({
      metricsToken: null,
      processMetrics: true,
      dependencyTimeoutMs: 1000,
      logRequests: true,
      logBodies: false,
      quietPaths: ['/metrics', '/health/live', '/health/ready', '/health/startup'],
      otlp: null,
      dailyCostAlertUsd: null,
    })
  })

  test('a token env that is not set stops startup instead of leaving /metrics open', () => {
    const file = { observability: { metrics: { bearer_token_env: 'NOPE_TOKEN' } } }
    expect(() => buildConfig({}, file)).toThrow(ConfigError)
    expect(() => buildConfig({}, file)).toThrow('NOPE_TOKEN is not set')
  })

  test('OTLP endpoints and service name come from the standard OTEL_* variables', () => {
    const file = { observability: { tracing: { service_name: 'gw', sample_ratio: 0.25 } } }
    const base = buildConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' }, file)
    expect(base.observability.otlp).toEqual({
      url: 'http://collector:4318/v1/traces',
      serviceName: 'gw',
      sampleRatio: 0.25,
    })
    const own = buildConfig(
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://x:1/traces', OTEL_SERVICE_NAME: 'env-name' },
      file,
    )
    expect(own.observability.otlp).toMatchObject({ url: 'http://x:1/traces', serviceName: 'env-name' })
  })
})

test('with an OTLP endpoint the SDK is loaded and spans are exported over HTTP', async () => {
  const received: Array<{ path: string; body: string }> = []
  const collector = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    async fetch(request) {
      received.push({ path: new URL(request.url).pathname, body: await request.text() })
      return new Response('{}', { headers: { 'content-type': 'application/json' } })
    },
  })
  const hub = new SettlementHub()
  const url = `http://127.0.0.1:${collector.port}/v1/traces`
  const app = new Elysia()
    .use(exchange({ hub }))
    .use(
      observability({
        hub,
        version: '1.2.3',
        processMetrics: false,
        otlp: { url, serviceName: 'gw-test', sampleRatio: 1 },
      }),
    )
    .get('/hello', () => 'hi')
    .listen({ port: 0, hostname: '127.0.0.1' })
  try {
    const traceId = '0af7651916cd43dd8448eb211c80319c'
    // The SDK loads in the background; requests before that are not recorded.
    await Bun.sleep(200)
    await (
      await fetch(`http://127.0.0.1:${app.server!.port}/hello`, {
        headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` },
      })
    ).text()
    await Bun.sleep(20)
    await app.stop(true)
    await eventually(() => received.length > 0, 5000)
    expect(received[0]!.path).toBe('/v1/traces')
    const body = received.map((r) => r.body).join('\n')
    expect(body).toContain('gw-test')
    expect(body).toContain('GET /hello')
  } finally {
    collector.stop(true)
  }
})
