/**
 * Any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, llama.cpp, Groq, Together,
 * OpenRouter...). Requests go out as they came in; what this module adds is the failure
 * model: every way an upstream can fail becomes a typed UpstreamError, so retries, breakers
 * and the client-facing error can act on it without ever seeing the upstream's raw body.
 */
import {
  type CallContext,
  type CallDeadline,
  type ChatChunk,
  type ChatCompletion,
  type ChatRequest,
  type EmbeddingRequest,
  type EmbeddingResponse,
  type Provider,
  UpstreamError,
  type UpstreamErrorKind,
} from './provider'
import { parseSSE, type SSEEnd, type SSEEvent, SSEFormatError, withRawData } from './sse'

export interface OpenAIProviderOptions {
  name: string
  /** Base URL including the version segment, e.g. `https://api.openai.com/v1`. */
  baseUrl: string
  apiKey?: string
  /** Sent with every request (organisation, project, gateway-specific routing headers). */
  headers?: Record<string, string>
  /**
   * Longest wait for the upstream: for the answer's headers and body, and for a stream, for
   * each next chunk. Matches the OpenAI SDK's own default.
   * @default 600000
   */
  timeoutMs?: number
}

/** How much of an error body is read to find its code; the rest is never needed. */
const ERROR_BODY_LIMIT = 64 * 1024
const safeCode = /^[\w.:-]{1,64}$/

/** The caller's signal, joined with a timer that can be paused while the consumer holds a chunk. */
class Deadline implements CallDeadline {
  readonly signal: AbortSignal
  private readonly timeout = new AbortController()
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    parent: AbortSignal,
    private readonly ms: number,
  ) {
    this.signal = AbortSignal.any([parent, this.timeout.signal])
    this.restart()
  }

  get expired(): boolean {
    return this.timeout.signal.aborted
  }

  restart(): void {
    this.pause()
    this.timer = setTimeout(() => this.timeout.abort(), this.ms)
  }

  pause(): void {
    clearTimeout(this.timer)
  }
}

export function parseRetryAfter(headers: Headers, now = Date.now()): number | null {
  const ms = Number(headers.get('retry-after-ms') ?? Number.NaN)
  if (Number.isFinite(ms) && ms >= 0) return ms
  const value = headers.get('retry-after')?.trim()
  if (!value) return null
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value) * 1000
  const date = Date.parse(value)
  return Number.isNaN(date) ? null : Math.max(0, date - now)
}

type FailureDetails = Pick<
  ConstructorParameters<typeof UpstreamError>[0],
  'retryable' | 'retryAfterMs' | 'upstreamCode' | 'cause'
>

interface ErrorFields {
  code: string | null
  status: number | null
}

/** Pulls the machine-readable parts out of an OpenAI error object; the free text stays behind. */
function errorFields(body: unknown): ErrorFields | null {
  if (body === null || typeof body !== 'object' || !('error' in body)) return null
  const error = body.error
  if (error === null || typeof error !== 'object') return { code: null, status: null }
  const field = (name: string): unknown =>
    name in error ? (error as Record<string, unknown>)[name] : undefined
  const candidates = [field('code'), field('type')].filter((value) => typeof value === 'string')
  const code = candidates.find((value) => safeCode.test(value)) ?? null
  const numeric = [field('status'), field('code')].find(
    (value) => typeof value === 'number' && Number.isInteger(value) && value >= 400 && value <= 599,
  )
  return { code, status: typeof numeric === 'number' ? numeric : null }
}

async function readBounded(response: Response, limit: number): Promise<string> {
  if (!response.body) return ''
  const reader = response.body.getReader()
  const decoder = new TextDecoder()
  let text = ''
  try {
    while (text.length < limit) {
      const { done, value } = await reader.read()
      if (done) break
      text += decoder.decode(value, { stream: true })
    }
  } finally {
    await reader.cancel().catch(() => {})
  }
  return text + decoder.decode()
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

export class OpenAIProvider implements Provider {
  readonly type = 'openai' as const
  readonly name: string
  private readonly baseUrl: string
  private readonly apiKey: string | undefined
  private readonly headers: Record<string, string>
  private readonly timeoutMs: number

  constructor({ name, baseUrl, apiKey, headers = {}, timeoutMs = 600_000 }: OpenAIProviderOptions) {
    this.name = name
    this.baseUrl = baseUrl.replace(/\/+$/, '')
    this.apiKey = apiKey
    this.headers = headers
    this.timeoutMs = timeoutMs
  }

  async chat(request: ChatRequest, context: CallContext): Promise<ChatCompletion> {
    // OpenAI rejects stream_options on a request that does not stream; JSON.stringify drops an undefined field.
    const payload = { ...request, stream: false, stream_options: undefined }
    const body = await this.postJson('/chat/completions', payload, context)
    if (!hasArray(body, 'choices')) throw this.protocolError('a chat completion without choices')
    return body as ChatCompletion
  }

  async *chatStream(request: ChatRequest, context: CallContext): AsyncGenerator<ChatChunk, void, undefined> {
    const body = {
      ...request,
      stream: true,
      stream_options: { ...request.stream_options, include_usage: true },
    }
    const deadline = context.deadline?.(this.timeoutMs) ?? new Deadline(context.signal, this.timeoutMs)
    let events: AsyncGenerator<SSEEvent, SSEEnd, undefined> | undefined
    try {
      const response = await this.post('/chat/completions', body, context, deadline, 'text/event-stream')
      if (!response.body) throw this.protocolError('a stream without a body')
      events = parseSSE(response.body, deadline.signal)
      while (true) {
        deadline.restart()
        let step: IteratorResult<SSEEvent, SSEEnd>
        try {
          step = await events.next()
        } catch (error) {
          throw this.failure(error, context, deadline, 'body')
        }
        if (step.done) {
          if (step.value === 'eof') throw this.protocolError('a stream that ended before [DONE]')
          return
        }
        const chunk = parseJson(step.value.data)
        const upstreamError = errorFields(chunk)
        if (upstreamError || step.value.event === 'error') throw this.streamError(upstreamError)
        if (!hasArray(chunk, 'choices')) throw this.protocolError('a stream frame that is not a chunk')
        deadline.pause()
        yield withRawData(chunk as ChatChunk, step.value.data)
      }
    } finally {
      deadline.pause()
      await events?.return('eof')
    }
  }

  async embeddings(request: EmbeddingRequest, context: CallContext): Promise<EmbeddingResponse> {
    const body = await this.postJson('/embeddings', { ...request, encoding_format: 'float' }, context)
    if (!hasArray(body, 'data')) throw this.protocolError('an embeddings answer without data')
    return body as EmbeddingResponse
  }

  private async postJson(path: string, payload: unknown, context: CallContext): Promise<unknown> {
    const deadline = context.deadline?.(this.timeoutMs) ?? new Deadline(context.signal, this.timeoutMs)
    try {
      const response = await this.post(path, payload, context, deadline, 'application/json')
      let body: unknown
      try {
        body = await response.json()
      } catch (error) {
        throw this.failure(error, context, deadline, 'body')
      }
      const upstreamError = errorFields(body)
      if (upstreamError) throw this.streamError(upstreamError)
      return body
    } finally {
      deadline.pause()
    }
  }

  private async post(
    path: string,
    payload: unknown,
    context: CallContext,
    deadline: CallDeadline,
    accept: string,
  ): Promise<Response> {
    const headers: Record<string, string> = { ...this.headers, ...context.headers }
    headers['content-type'] = 'application/json'
    headers.accept = accept
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`
    let response: Response
    try {
      // keepalive: reuse pooled connections; an upstream call should not pay a TLS handshake.
      response = await fetch(`${this.baseUrl}${path}`, {
        method: 'POST',
        headers,
        body: JSON.stringify(payload),
        signal: deadline.signal,
        keepalive: true,
      })
    } catch (error) {
      throw this.failure(error, context, deadline, 'connect')
    }
    context.onResponse?.()
    if (!response.ok) throw await this.httpError(response, context, deadline)
    return response
  }

  private async httpError(response: Response, context: CallContext, deadline: CallDeadline) {
    let fields: ErrorFields | null = null
    try {
      fields = errorFields(parseJson(await readBounded(response, ERROR_BODY_LIMIT)))
    } catch (error) {
      if (context.signal.aborted || deadline.expired) return this.failure(error, context, deadline, 'body')
    }
    const code = fields?.code ?? null
    return this.fail('http', response.status, `answered HTTP ${response.status}${code ? ` (${code})` : ''}`, {
      retryAfterMs: parseRetryAfter(response.headers),
      upstreamCode: code,
    })
  }

  /** An error object in place of an answer: in a 200 body, or as a frame of a stream. */
  private streamError(fields: ErrorFields | null): UpstreamError {
    const code = fields?.code ?? null
    return this.fail('http', fields?.status ?? 502, `reported an error${code ? ` (${code})` : ''}`, {
      upstreamCode: code,
    })
  }

  private protocolError(what: string, cause?: unknown): UpstreamError {
    return this.fail('protocol', 502, `sent ${what}`, { cause })
  }

  /** Classifies a thrown error by what was going on: our own limit, then the caller's abort. */
  private failure(error: unknown, context: CallContext, deadline: CallDeadline, phase: 'connect' | 'body') {
    if (error instanceof UpstreamError) return error
    // Our limit first: when the caller keeps it (context.deadline), its expiry aborts context.signal too.
    if (deadline.expired)
      return this.fail('timeout', 504, `did not answer within ${this.timeoutMs} ms`, {
        retryable: true,
        cause: error,
      })
    if (context.signal.aborted)
      return this.fail('aborted', 499, 'call aborted', { retryable: false, cause: error })
    if (error instanceof SSEFormatError) return this.protocolError('a malformed stream', error)
    if (phase === 'body') return this.protocolError('an answer that broke off', error)
    const code = error !== null && typeof error === 'object' && 'code' in error ? String(error.code) : ''
    const shown = safeCode.test(code) ? ` (${code})` : ''
    return this.fail('connection', 502, `is unreachable${shown}`, { retryable: true, cause: error })
  }

  /** Messages name the upstream and what went wrong, never its body or our credentials. */
  private fail(kind: UpstreamErrorKind, status: number, what: string, extra: FailureDetails = {}) {
    return new UpstreamError({ kind, status, message: `Upstream ${this.name} ${what}.`, ...extra })
  }
}

function hasArray(body: unknown, field: string): boolean {
  return body !== null && typeof body === 'object' && Array.isArray((body as Record<string, unknown>)[field])
}
