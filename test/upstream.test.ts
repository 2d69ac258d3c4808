/**
 * The upstream layer's contract: the SSE parser survives any chunking, and the OpenAI
 * provider, over real HTTP against the simulator server, turns every kind of upstream
 * failure into the typed UpstreamError that retries, breakers and clients rely on.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import { ApiError } from '../plugins/exchange'
import type { ModelConfig } from '../src/config'
import { OpenAIProvider, parseRetryAfter } from '../src/upstream/openai'
import { type ChatChunk, type ChatRequest, UpstreamError } from '../src/upstream/provider'
import { createProviders, ModelRouter } from '../src/upstream/router'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { SimulatorProvider } from '../src/upstream/simulator'
import { MAX_EVENT_CHARS, parseSSE, type SSEEvent, SSEFormatError, sseFrame } from '../src/upstream/sse'

const bytes = (text: string) => new TextEncoder().encode(text)

function streamOf(chunks: Uint8Array[], onCancel?: () => void): ReadableStream<Uint8Array> {
  let next = 0
  return new ReadableStream({
    pull(controller) {
      const chunk = chunks[next++]
      if (chunk) controller.enqueue(chunk)
      else controller.close()
    },
    cancel: onCancel,
  })
}

async function thrown(call: () => unknown): Promise<unknown> {
  try {
    await call()
  } catch (error) {
    return error
  }
  return null
}

async function failure(call: () => unknown): Promise<UpstreamError> {
  const error = await thrown(call)
  expect(error).toBeInstanceOf(UpstreamError)
  return error as UpstreamError
}

async function collect(body: ReadableStream<Uint8Array>, signal?: AbortSignal) {
  const events: SSEEvent[] = []
  const parser = parseSSE(body, signal)
  for (let step = await parser.next(); ; step = await parser.next()) {
    if (step.done) return { events, end: step.value }
    events.push(step.value)
  }
}

describe('parseSSE', () => {
  const wire =
    ': keep-alive comment\r\n' +
    'data: {"text":"héllo 👋 wörld"}\r\n\r\n' +
    'event: note\ndata: first line\ndata:second line\n\n' +
    'data\r\rid: 7\nretry: 10\ndata: ∑ tail\n\n' +
    'data: [DONE]\n\n' +
    'data: after done\n\n'
  const expected: SSEEvent[] = [
    { data: '{"text":"héllo 👋 wörld"}' },
    { event: 'note', data: 'first line\nsecond line' },
    { data: '' },
    { data: '∑ tail' },
  ]

  test('reads comments, event names, multi-line data and every line ending; stops at [DONE]', async () => {
    expect(await collect(streamOf([bytes(wire)]))).toEqual({ events: expected, end: 'done' })
  })

  test('gives the same events however the bytes are split, inside CRLF and UTF-8 sequences too', async () => {
    const all = bytes(wire)
    for (let cut = 1; cut < all.length; cut++) {
      const result = await collect(streamOf([all.slice(0, cut), all.slice(cut)]))
      expect({ cut, ...result }).toEqual({ cut, events: expected, end: 'done' })
    }
    const byteByByte = Array.from(all, (byte) => Uint8Array.of(byte))
    expect(await collect(streamOf(byteByByte))).toEqual({ events: expected, end: 'done' })
  })

  test('reports a body that ends without [DONE] as eof, dropping an unterminated event', async () => {
    expect(await collect(streamOf([bytes('data: one\n\ndata: half')]))).toEqual({
      events: [{ data: 'one' }],
      end: 'eof',
    })
  })

  test('cancels the body when the consumer stops early', async () => {
    let cancelled = false
    const parser = parseSSE(streamOf([bytes('data: 1\n\n'), bytes('data: 2\n\n')], () => (cancelled = true)))
    for await (const event of parser) {
      expect(event.data).toBe('1')
      break
    }
    expect(cancelled).toBe(true)
  })

  test('stops with the abort reason when its signal aborts mid-read', async () => {
    const controller = new AbortController()
    const endless = new ReadableStream<Uint8Array>({ pull: () => new Promise(() => {}) })
    const pending = collect(endless, controller.signal)
    controller.abort(new Error('client went away'))
    await expect(pending).rejects.toThrow('client went away')
  })

  test('refuses an event larger than the bound', async () => {
    const block = bytes(`data: ${'x'.repeat(1024 * 1024)}`)
    const blocks = Array.from({ length: Math.ceil(MAX_EVENT_CHARS / block.length) + 1 }, () => block)
    await expect(collect(streamOf(blocks))).rejects.toBeInstanceOf(SSEFormatError)
  })

  test('sseFrame frames data the parser reads back, multi-line included', async () => {
    expect(sseFrame('{"a":1}')).toBe('data: {"a":1}\n\n')
    const frames = sseFrame('line one\nline two') + sseFrame('x') + sseFrame('[DONE]')
    expect(await collect(streamOf([bytes(frames)]))).toEqual({
      events: [{ data: 'line one\nline two' }, { data: 'x' }],
      end: 'done',
    })
  })
})

describe('parseRetryAfter', () => {
  const headers = (init: Record<string, string>) => new Headers(init)
  test('reads seconds, HTTP dates and retry-after-ms', () => {
    const now = Date.parse('2025-01-01T00:00:00Z')
    expect(parseRetryAfter(headers({ 'retry-after': '3' }), now)).toBe(3000)
    expect(parseRetryAfter(headers({ 'retry-after': 'Wed, 01 Jan 2025 00:00:05 GMT' }), now)).toBe(5000)
    expect(parseRetryAfter(headers({ 'retry-after': 'Tue, 31 Dec 2024 00:00:00 GMT' }), now)).toBe(0)
    expect(parseRetryAfter(headers({ 'retry-after-ms': '250', 'retry-after': '3' }), now)).toBe(250)
    expect(parseRetryAfter(headers({ 'retry-after': 'soon' }), now)).toBeNull()
    expect(parseRetryAfter(headers({}), now)).toBeNull()
  })
})

describe('OpenAIProvider against the simulator server', () => {
  let sim: SimServer
  let provider: OpenAIProvider
  const request: ChatRequest = { model: 'sim-1', messages: [{ role: 'user', content: 'tell me a story' }] }
  const headers = { traceparent: '00-trace-01' }
  const context = (signal = new AbortController().signal) => ({ signal, headers })

  beforeAll(async () => {
    sim = await startSimServer({ port: 0 })
    provider = new OpenAIProvider({ name: 'remote', baseUrl: `${sim.url}/`, apiKey: 'sk-secret-key' })
  })
  beforeEach(() => sim.reset())
  afterAll(() => sim.stop())

  test('chat: a completion with usage; the key and the context headers are sent', async () => {
    const completion = await provider.chat({ ...request, stream_options: { include_usage: true } }, context())
    expect(completion.object).toBe('chat.completion')
    expect(completion.choices[0]?.message.content).toBeString()
    expect(completion.usage?.total_tokens).toBeGreaterThan(0)
    expect(sim.stats.chat).toBe(1)
    expect(sim.lastHeaders?.get('authorization')).toBe('Bearer sk-secret-key')
    expect(sim.lastHeaders?.get('traceparent')).toBe('00-trace-01')
  })

  test('chatStream: chunks as they come, always ending with the usage chunk', async () => {
    const chunks = await Array.fromAsync(provider.chatStream({ ...request, max_tokens: 5 }, context()))
    expect(chunks[0]?.choices[0]?.delta.role).toBe('assistant')
    const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('')
    expect(text.split(' ')).toHaveLength(5)
    const last = chunks.at(-1)
    expect(last?.choices).toEqual([])
    expect(last?.usage?.completion_tokens).toBe(5)
    expect(sim.stats.chatStream).toBe(1)
  })

  test('embeddings: always asks for floats', async () => {
    const input = ['a b', 'c']
    const response = await provider.embeddings({ model: 'e', input, encoding_format: 'base64' }, context())
    expect(response.data).toHaveLength(2)
    expect(response.data[0]?.embedding).toBeArrayOfSize(16)
    expect(response.usage.prompt_tokens).toBe(3)
  })

  test('HTTP errors: typed, with retry-after and code, and no upstream text or key in the message', async () => {
    sim.addFaults([{ status: 429, retry_after: 2 }, { status: 503 }, { status: 400 }])
    const limited = await failure(() => provider.chat(request, context()))
    expect(limited).toMatchObject({ kind: 'http', status: 429, retryable: true, retryAfterMs: 2000 })
    expect(limited.upstreamCode).toBe('injected_fault')
    expect(limited.message).not.toContain('Injected')
    expect(limited.message).not.toContain('sk-secret-key')
    const unavailable = await failure(() => Array.fromAsync(provider.chatStream(request, context())))
    expect(unavailable).toMatchObject({ kind: 'http', status: 503, retryable: true, retryAfterMs: null })
    const invalid = await failure(() => provider.embeddings({ model: 'e', input: 'x' }, context()))
    expect(invalid).toMatchObject({ kind: 'http', status: 400, retryable: false })
  })

  test('a refused or reset connection is a retryable connection error', async () => {
    const closed = Bun.serve({ port: 0, fetch: () => new Response() })
    const port = closed.port
    await closed.stop(true)
    const nowhere = new OpenAIProvider({ name: 'gone', baseUrl: `http://127.0.0.1:${port}/v1` })
    const refused = await failure(() => nowhere.chat(request, context()))
    expect(refused).toMatchObject({ kind: 'connection', status: 502, retryable: true })
    sim.addFaults([{ reset: true }])
    expect(await failure(() => provider.chat(request, context()))).toMatchObject({ kind: 'connection' })
  })

  test('a stream cut before [DONE] is a protocol error, never a silent end', async () => {
    sim.addFaults([{ fail_after_chunks: 2 }])
    const received: ChatChunk[] = []
    const error = await failure(async () => {
      for await (const chunk of provider.chatStream(request, context())) received.push(chunk)
    })
    expect(error).toMatchObject({ kind: 'protocol', status: 502 })
    expect(received).toHaveLength(2)
  })

  test('aborting mid-stream closes the connection: the upstream counts an abort', async () => {
    sim.addFaults([{ stall_after_chunks: { chunks: 2, ms: 10_000 } }])
    const controller = new AbortController()
    const stream = provider.chatStream(request, context(controller.signal))
    const error = await failure(async () => {
      let seen = 0
      for await (const _ of stream) if (++seen === 2) setTimeout(() => controller.abort(), 10)
    })
    expect(error).toMatchObject({ kind: 'aborted', status: 499, retryable: false })
    for (let waited = 0; sim.stats.aborted === 0 && waited < 2000; waited += 10) await Bun.sleep(10)
    expect(sim.stats.aborted).toBe(1)
  })

  test('an upstream slower than timeoutMs is a retryable timeout, before and during a stream', async () => {
    const impatient = new OpenAIProvider({ name: 'remote', baseUrl: sim.url, timeoutMs: 50 })
    sim.addFaults([{ stall_ms: 1000 }, { stall_after_chunks: { chunks: 1, ms: 1000 } }])
    const beforeHeaders = await failure(() => impatient.chat(request, context()))
    expect(beforeHeaders).toMatchObject({ kind: 'timeout', status: 504, retryable: true })
    const midStream = await failure(() => Array.fromAsync(impatient.chatStream(request, context())))
    expect(midStream).toMatchObject({ kind: 'timeout', status: 504 })
  })
})

describe('OpenAIProvider against a misbehaving upstream', () => {
  let frames = ''
  let lastBody: Record<string, unknown> = {}
  const upstream = Bun.serve({
    port: 0,
    async fetch(request) {
      lastBody = (await request.json()) as Record<string, unknown>
      return new Response(frames, { headers: { 'content-type': 'text/event-stream' } })
    },
  })
  const provider = new OpenAIProvider({ name: 'odd', baseUrl: `http://127.0.0.1:${upstream.port}/v1` })
  const context = { signal: new AbortController().signal }
  const request: ChatRequest = { model: 'm', messages: [], stream_options: { include_usage: false } }
  afterAll(() => upstream.stop(true))

  const streamFailure = () => failure(() => Array.fromAsync(provider.chatStream(request, context)))

  test('asks for usage when streaming, and sends no stream_options when not', async () => {
    frames = 'data: [DONE]\n\n'
    expect(await Array.fromAsync(provider.chatStream(request, context))).toEqual([])
    expect(lastBody).toMatchObject({ stream: true, stream_options: { include_usage: true } })
    frames = JSON.stringify({ choices: [] })
    await provider.chat(request, context)
    expect(lastBody.stream).toBe(false)
    expect(lastBody).not.toHaveProperty('stream_options')
  })

  test('a frame that is not JSON is a protocol error', async () => {
    frames = 'data: {"choices":[]}\n\ndata: {not json\n\ndata: [DONE]\n\n'
    expect(await streamFailure()).toMatchObject({ kind: 'protocol', status: 502 })
  })

  test('an error object inside the stream is an http error with its status', async () => {
    frames =
      'data: {"error":{"message":"overloaded","type":"server_error","code":"overloaded","status":503}}\n\n'
    expect(await streamFailure()).toMatchObject({ kind: 'http', status: 503, upstreamCode: 'overloaded' })
    frames = 'event: error\ndata: {"error":{"message":"boom"}}\n\n'
    expect(await streamFailure()).toMatchObject({ kind: 'http', status: 502, retryable: true })
  })

  test('a 200 that is not a completion is a protocol error', async () => {
    frames = '<html>proxy page</html>'
    expect(await failure(() => provider.chat(request, context))).toMatchObject({
      kind: 'protocol',
      status: 502,
    })
  })
})

describe('ModelRouter', () => {
  const model = (name: string, kind: ModelConfig['kind'], provider = 'sim'): ModelConfig => ({
    name,
    provider,
    upstreamModel: name,
    kind,
    pricing: { input: 1, output: 1 },
    fallbacks: [],
  })
  const providers = { sim: new SimulatorProvider() }
  const router = new ModelRouter(
    { 'sim-1': model('sim-1', 'chat'), emb: model('emb', 'embedding') },
    providers,
  )

  test('resolves a model to its config and provider, and lists them', () => {
    expect(router.resolve('sim-1', 'chat').provider).toBe(providers.sim)
    expect(router.list().map((entry) => entry.name)).toEqual(['sim-1', 'emb'])
  })

  test('an unknown model is the OpenAI model_not_found 404', async () => {
    const error = await thrown(() => router.resolve('nope'))
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({
      status: 404,
      type: 'invalid_request_error',
      code: 'model_not_found',
      param: 'model',
      message: "The model 'nope' does not exist.",
    })
  })

  test('a model of the wrong kind for the endpoint is a 400', () => {
    expect(() => router.resolve('emb', 'chat')).toThrow(ApiError)
    expect(() => router.resolve('emb', 'chat')).toThrow('is an embedding model')
  })

  test('refuses a model whose provider does not exist', () => {
    expect(() => new ModelRouter({ x: model('x', 'chat', 'missing') }, providers)).toThrow(
      'no provider named',
    )
  })

  test('createProviders builds one instance per configured provider', () => {
    const built = createProviders({
      sim: { type: 'simulator', ttft_ms: 5 },
      remote: { type: 'openai', base_url: 'http://127.0.0.1:1/v1', apiKey: 'k', timeout_ms: 1000 },
    })
    expect(built.sim).toBeInstanceOf(SimulatorProvider)
    expect(built.remote).toBeInstanceOf(OpenAIProvider)
    expect(built.remote?.name).toBe('remote')
  })
})
