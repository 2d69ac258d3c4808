/**
 * The simulator is the reference upstream for every other test and benchmark, so its
 * promises are checked here: answers derive from the prompt, usage is exact under its
 * tokenizer, latency and failures follow its settings, and the HTTP server speaks the
 * OpenAI wire format and obeys scripted faults.
 */
import { afterAll, beforeEach, describe, expect, test } from 'bun:test'
import {
  type ChatChunk,
  type ChatRequest,
  type EmbeddingResponse,
  UpstreamError,
} from '../src/upstream/provider'
import { startSimServer } from '../src/upstream/sim-server'
import { SimulatorProvider } from '../src/upstream/simulator'
import { contentText, countPromptTokens, countTokens, MESSAGE_OVERHEAD_TOKENS } from '../src/upstream/tokens'

const context = (signal = new AbortController().signal) => ({ signal })
const ask = (content: unknown, extra: Partial<ChatRequest> = {}): ChatRequest => ({
  model: 'sim-1',
  messages: [
    { role: 'system', content: 'be brief' },
    { role: 'user', content },
  ],
  ...extra,
})
const textOf = (chunks: ChatChunk[], index = 0) =>
  chunks.map((chunk) => chunk.choices.find((choice) => choice.index === index)?.delta.content ?? '').join('')

describe('tokens', () => {
  test('a token is a whitespace-separated word', () => {
    expect(countTokens('')).toBe(0)
    expect(countTokens('  one\ttwo\n three  ')).toBe(3)
    expect(
      contentText([
        { type: 'text', text: 'a b' },
        { type: 'image_url', image_url: {} },
        { type: 'text', text: 'c' },
      ]),
    ).toBe('a b c')
    const messages = [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: [{ type: 'text', text: 'one two three' }] },
    ]
    expect(countPromptTokens(messages)).toBe(5 + 2 * MESSAGE_OVERHEAD_TOKENS)
  })
})

describe('SimulatorProvider', () => {
  const sim = new SimulatorProvider()

  test('answers deterministically from the prompt, with exact usage', async () => {
    const first = await sim.chat(ask('what is a gateway'), context())
    const again = await sim.chat(ask('what is a gateway'), context())
    const other = await sim.chat(ask('something else entirely'), context())
    const content = first.choices[0]?.message.content ?? ''
    expect(first.id).toStartWith('chatcmpl-sim-')
    expect(again.choices[0]?.message.content).toBe(content)
    expect(other.choices[0]?.message.content).not.toBe(content)
    expect(countTokens(content)).toBeWithin(8, 17)
    expect(first.choices[0]?.finish_reason).toBe('stop')
    expect(first.usage).toEqual({
      prompt_tokens: 6 + 2 * MESSAGE_OVERHEAD_TOKENS,
      completion_tokens: countTokens(content),
      total_tokens: 6 + 2 * MESSAGE_OVERHEAD_TOKENS + countTokens(content),
    })
  })

  test('max_tokens and max_completion_tokens cap the answer and finish with length', async () => {
    const capped = await sim.chat(ask('hello', { max_tokens: 3 }), context())
    expect(countTokens(capped.choices[0]?.message.content ?? '')).toBe(3)
    expect(capped.choices[0]?.finish_reason).toBe('length')
    const newer = await sim.chat(ask('hello', { max_tokens: 9, max_completion_tokens: 2 }), context())
    expect(newer.usage?.completion_tokens).toBe(2)
    const roomy = await sim.chat(ask('hello', { max_tokens: 1000 }), context())
    expect(roomy.choices[0]?.finish_reason).toBe('stop')
  })

  test('n choices differ from each other and all count towards usage', async () => {
    const completion = await sim.chat(ask('pick one', { n: 3 }), context())
    const texts = completion.choices.map((choice) => choice.message.content ?? '')
    expect(new Set(texts).size).toBe(3)
    expect(completion.usage?.completion_tokens).toBe(texts.reduce((sum, text) => sum + countTokens(text), 0))
  })

  test('streams one chunk per token, then the finish, then usage only when asked', async () => {
    const request = ask('stream it', { n: 2, max_tokens: 4 })
    const whole = await sim.chat(request, context())
    const chunks = await Array.fromAsync(sim.chatStream(request, context()))
    expect(chunks.filter((chunk) => chunk.choices[0]?.delta.role === 'assistant')).toHaveLength(2)
    expect(chunks.filter((chunk) => chunk.choices[0]?.finish_reason === 'length')).toHaveLength(2)
    expect(chunks).toHaveLength(2 * 4 + 2)
    expect(textOf(chunks, 0)).toBe(whole.choices[0]?.message.content ?? '')
    expect(textOf(chunks, 1)).toBe(whole.choices[1]?.message.content ?? '')
    expect(chunks.some((chunk) => chunk.usage)).toBe(false)

    const withUsage = await Array.fromAsync(
      sim.chatStream({ ...request, stream_options: { include_usage: true } }, context()),
    )
    expect(withUsage.at(-1)).toMatchObject({ choices: [], usage: whole.usage })
  })

  test('paces answers by ttftMs and tokensPerSecond, streamed or not', async () => {
    const paced = new SimulatorProvider({ ttftMs: 40, tokensPerSecond: 100 })
    const started = performance.now()
    const arrivals: number[] = []
    for await (const _ of paced.chatStream(ask('time me', { max_tokens: 4 }), context()))
      arrivals.push(performance.now() - started)
    expect(arrivals[0]).toBeGreaterThanOrEqual(35)
    expect(arrivals[3]! - arrivals[0]!).toBeGreaterThanOrEqual(25)
    const whole = performance.now()
    await paced.chat(ask('time me', { max_tokens: 4 }), context())
    expect(performance.now() - whole).toBeGreaterThanOrEqual(65)
  })

  test('an abort stops the stream with an aborted error', async () => {
    const slow = new SimulatorProvider({ tokensPerSecond: 50 })
    const controller = new AbortController()
    const seen: ChatChunk[] = []
    const error = await (async () => {
      for await (const chunk of slow.chatStream(
        ask('long', { max_tokens: 100 }),
        context(controller.signal),
      )) {
        seen.push(chunk)
        if (seen.length === 2) controller.abort()
      }
    })().catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(UpstreamError)
    expect(error).toMatchObject({ kind: 'aborted', status: 499, retryable: false })
    expect(seen).toHaveLength(2)
  })

  test('fails at failureRate with failureStatus, decided by the injected random source', async () => {
    const draws = [0.1, 0.9]
    const flaky = new SimulatorProvider({
      failureRate: 0.5,
      failureStatus: 503,
      random: () => draws.shift() ?? 1,
    })
    const failed = await flaky.chat(ask('x'), context()).catch((caught: unknown) => caught)
    expect(failed).toMatchObject({
      kind: 'http',
      status: 503,
      retryable: true,
      upstreamCode: 'simulated_failure',
    })
    expect((await flaky.chat(ask('x'), context())).choices).toHaveLength(1)
  })

  test('embeddings: deterministic unit vectors, dimensions honoured, exact usage', async () => {
    const response = await sim.embeddings(
      { model: 'e', input: ['red apple', 'green pear', 'red apple'] },
      context(),
    )
    const [first, second, third] = response.data.map((item) => item.embedding as number[])
    expect(first).toHaveLength(16)
    expect(Math.hypot(...(first ?? []))).toBeCloseTo(1, 10)
    expect(third).toEqual(first!)
    expect(second).not.toEqual(first!)
    expect(response.usage).toEqual({ prompt_tokens: 6, total_tokens: 6 })
    const sized = await sim.embeddings({ model: 'e', input: [1, 2, 3], dimensions: 64 }, context())
    expect(sized.data).toHaveLength(1)
    expect(sized.data[0]?.embedding).toHaveLength(64)
    expect(sized.usage.prompt_tokens).toBe(3)
  })
})

describe('sim server', async () => {
  const server = await startSimServer({ port: 0 })
  const root = server.url.replace(/\/v1$/, '')
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${server.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) })
  beforeEach(() => server.reset())
  afterAll(() => server.stop())

  test('streams SSE ending with data: [DONE]', async () => {
    const response = await post('/chat/completions', { ...ask('hi'), stream: true, max_tokens: 2 })
    expect(response.headers.get('content-type')).toBe('text/event-stream')
    const text = await response.text()
    expect(text.endsWith('data: [DONE]\n\n')).toBe(true)
    expect(text.split('\n\n').filter(Boolean)).toHaveLength(2 + 1 + 1)
  })

  test('answers base64 embeddings that decode to the float ones', async () => {
    const floats = (await (
      await post('/embeddings', { model: 'e', input: 'hello' })
    ).json()) as EmbeddingResponse
    const packed = (await (
      await post('/embeddings', { model: 'e', input: 'hello', encoding_format: 'base64' })
    ).json()) as EmbeddingResponse
    const decoded = new Float32Array(Uint8Array.fromBase64(String(packed.data[0]?.embedding)).buffer)
    const expected = floats.data[0]?.embedding as number[]
    expect(decoded).toHaveLength(16)
    for (const [index, value] of decoded.entries())
      expect(value).toBeCloseTo(expected[index] ?? Number.NaN, 6)
  })

  test('lists its models and answers bad input with the OpenAI envelope', async () => {
    const models = (await (await fetch(`${server.url}/models`)).json()) as { data: Array<{ id: string }> }
    expect(models.data.map((model) => model.id)).toContain('sim-1')
    const bad = await fetch(`${server.url}/chat/completions`, { method: 'POST', body: '{nope' })
    expect(bad.status).toBe(400)
    expect(await bad.json()).toHaveProperty(
      'error',
      expect.objectContaining({ type: 'invalid_request_error', code: 'invalid_request' }),
    )
  })

  test('applies faults posted over HTTP in order, `times` each, and reports stats', async () => {
    const queued = await fetch(`${root}/_sim/faults`, {
      method: 'POST',
      body: JSON.stringify([{ status: 429, retry_after: 7, times: 2 }, { status: 500 }]),
    })
    expect(await queued.json()).toMatchObject({ queued: 2 })
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const response = await post('/chat/completions', ask('x'))
      statuses.push(response.status)
      if (i === 0) expect(response.headers.get('retry-after')).toBe('7')
    }
    expect(statuses).toEqual([429, 429, 500, 200])
    const stats = await (await fetch(`${root}/_sim/stats`)).json()
    expect(stats).toMatchObject({ requests: 4, chat: 4, pending_faults: 0 })
    await fetch(`${root}/_sim/reset`, { method: 'POST' })
    expect(server.stats.requests).toBe(0)
  })

  test('x-sim-ttft-ms delays the answer; the last request headers are kept', async () => {
    const started = performance.now()
    await post('/chat/completions', ask('x'), { 'x-sim-ttft-ms': '40', traceparent: '00-abc-01' })
    expect(performance.now() - started).toBeGreaterThanOrEqual(35)
    expect(server.lastHeaders?.get('traceparent')).toBe('00-abc-01')
  })

  test('a configured failure rate answers its status in the envelope', async () => {
    const failing = await startSimServer({ port: 0, failureRate: 1, failureStatus: 502 })
    const response = await fetch(`${failing.url}/chat/completions`, {
      method: 'POST',
      body: JSON.stringify(ask('x')),
    })
    expect(response.status).toBe(502)
    expect(await response.json()).toHaveProperty('error.code', 'simulated_failure')
    await failing.stop()
  })
})
