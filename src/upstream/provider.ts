/**
 * What the gateway needs from a model provider. Requests and answers are OpenAI wire
 * objects: tollgate speaks that format on both sides, so a provider translates only when
 * its upstream does not (none of the built-in ones need to).
 */

export interface ChatMessage {
  role: string
  content?: unknown
  [field: string]: unknown
}

/** A chat completion request as the client sent it, with `model` set to the upstream id. */
export interface ChatRequest {
  model: string
  messages: ChatMessage[]
  stream?: boolean
  stream_options?: { include_usage?: boolean; [field: string]: unknown } | null
  max_tokens?: number | null
  max_completion_tokens?: number | null
  n?: number | null
  seed?: number | null
  temperature?: number | null
  [field: string]: unknown
}

export interface WireUsage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
  prompt_tokens_details?: { cached_tokens?: number; [field: string]: unknown } | null
  [field: string]: unknown
}

export interface ChatCompletion {
  id: string
  object: 'chat.completion'
  created: number
  model: string
  choices: Array<{
    index: number
    message: { role: 'assistant'; content: string | null; [field: string]: unknown }
    finish_reason: string | null
    logprobs?: unknown
    [field: string]: unknown
  }>
  usage?: WireUsage
  [field: string]: unknown
}

export interface ChatChunk {
  id: string
  object: 'chat.completion.chunk'
  created: number
  model: string
  choices: Array<{
    index: number
    delta: { role?: string; content?: string | null; [field: string]: unknown }
    finish_reason: string | null
    logprobs?: unknown
    [field: string]: unknown
  }>
  /** Present (and `choices` empty) on the final chunk when usage was requested. */
  usage?: WireUsage | null
  [field: string]: unknown
}

export interface EmbeddingRequest {
  model: string
  input: string | string[] | number[] | number[][]
  encoding_format?: 'float' | 'base64'
  dimensions?: number
  user?: string
  [field: string]: unknown
}

export interface EmbeddingResponse {
  object: 'list'
  data: Array<{ object: 'embedding'; index: number; embedding: number[] | string }>
  model: string
  usage: { prompt_tokens: number; total_tokens: number }
}

/** A provider's own time limit on a call: the signal to hand the upstream, and its controls. */
export interface CallDeadline {
  /** Aborts when this limit runs out or the caller's signal aborts. */
  readonly signal: AbortSignal
  /** Whether this limit ran out (as opposed to the caller aborting). */
  readonly expired: boolean
  /** (Re)starts the limit from now. */
  restart(): void
  /** Stops the limit while the provider is not waiting on the upstream. */
  pause(): void
}

export interface CallContext {
  /** Aborting it must abort the upstream request (the socket, not just the promise). */
  signal: AbortSignal
  /**
   * The caller's own timer keeping a provider's limit of `ms` from now, so a call has one
   * timer and one abort controller; without it a provider keeps a timer of its own.
   */
  deadline?: (ms: number) => CallDeadline
  /** Headers to forward upstream (request id, traceparent). */
  headers?: Record<string, string>
  /**
   * Called when the upstream's response headers arrive: the end of the connect phase the
   * caller may time separately. Providers without a network hop never call it.
   */
  onResponse?: () => void
}

export interface Provider {
  readonly name: string
  readonly type: 'openai' | 'simulator'
  chat(request: ChatRequest, context: CallContext): Promise<ChatCompletion>
  /**
   * Streams chunks as the upstream produces them. The gateway always asks for usage, so a
   * conforming upstream ends with a usage chunk; the route strips it when the client did not ask.
   */
  chatStream(request: ChatRequest, context: CallContext): AsyncIterable<ChatChunk>
  /** Embeddings are always returned as float arrays; the route applies `encoding_format`. */
  embeddings(request: EmbeddingRequest, context: CallContext): Promise<EmbeddingResponse>
}

export type UpstreamErrorKind = 'http' | 'connection' | 'timeout' | 'protocol' | 'aborted'

/** A failure from an upstream, typed so retries, breakers and clients can act on it. */
export class UpstreamError extends Error {
  readonly kind: UpstreamErrorKind
  /** The upstream's HTTP status, or 502/504 for failures without one. */
  readonly status: number
  /** Whether trying again (later, or elsewhere) may succeed. */
  readonly retryable: boolean
  /** From the upstream's Retry-After, in ms. */
  readonly retryAfterMs: number | null
  /** The upstream's error code when it sent one (never its raw body). */
  readonly upstreamCode: string | null

  constructor(init: {
    kind: UpstreamErrorKind
    status: number
    message: string
    retryable?: boolean
    retryAfterMs?: number | null
    upstreamCode?: string | null
    cause?: unknown
  }) {
    super(init.message, { cause: init.cause })
    this.name = 'UpstreamError'
    this.kind = init.kind
    this.status = init.status
    this.retryable = init.retryable ?? isRetryableStatus(init.status)
    this.retryAfterMs = init.retryAfterMs ?? null
    this.upstreamCode = init.upstreamCode ?? null
  }
}

export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 409 || status === 429 || status >= 500
}
