/**
 * A built-in deterministic model, so the gateway answers with no upstream at all (the
 * embedded default, demos) and tests and benchmarks get an upstream whose every answer is
 * predictable: the text derives from the prompt, the usage is exact under `tokens.ts`, and
 * latency and failures are settings rather than luck.
 */
import {
  type CallContext,
  type ChatChunk,
  type ChatCompletion,
  type ChatRequest,
  type EmbeddingRequest,
  type EmbeddingResponse,
  type Provider,
  UpstreamError,
  type WireUsage,
} from './provider'
import { contentText, countPromptTokens, countTokens, embeddingInputs } from './tokens'

export interface SimulatorOptions {
  /** @default 'sim' */
  name?: string
  /**
   * Delay before the first token (and before a non-streamed answer), in ms.
   * @default 0
   */
  ttftMs?: number
  /**
   * Pace of the tokens after the first; 0 sends them all at once. A non-streamed answer
   * takes as long as its stream would.
   * @default 0
   */
  tokensPerSecond?: number
  /**
   * Share of calls (0..1) that fail with `failureStatus` before producing anything.
   * @default 0
   */
  failureRate?: number
  /** @default 500 */
  failureStatus?: number
  /**
   * Longest answer, in tokens, when the request sets no limit; natural answers are between
   * half of it and all of it.
   * @default 16
   */
  maxTokens?: number
  /**
   * Embedding size when the request does not ask for `dimensions`.
   * @default 16
   */
  dimensions?: number
  /** Source of randomness for `failureRate`, injectable so tests can decide the outcome. */
  random?: () => number
}

const words = (
  'the gateway answers every request with a token stream that flows from model to client while ' +
  'quotas hold and caches remember what was said before breakers guard upstreams as costs add up ' +
  'in nano dollars over time so operators sleep well at night knowing each call is counted'
).split(' ')

/** 32-bit FNV-1a: tiny, stable across runtimes and versions, good enough to seed a PRNG. */
function hash32(text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}

/** mulberry32: a seeded generator, so the same prompt always yields the same words. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

interface SimChoice {
  tokens: string[]
  finishReason: 'stop' | 'length'
}

const abortedError = (name: string, cause?: unknown) =>
  new UpstreamError({
    kind: 'aborted',
    status: 499,
    message: `Call to ${name} aborted.`,
    retryable: false,
    cause,
  })

/** Waits `ms`, or rejects at once when the call is aborted. */
function pause(ms: number, signal: AbortSignal, name: string): Promise<void> {
  if (signal.aborted) return Promise.reject(abortedError(name, signal.reason))
  if (ms <= 0) return Promise.resolve()
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer)
      reject(abortedError(name, signal.reason))
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

const completionId = () => `chatcmpl-sim-${crypto.randomUUID().replaceAll('-', '')}`
const now = () => Math.floor(Date.now() / 1000)

export class SimulatorProvider implements Provider {
  readonly type = 'simulator' as const
  readonly name: string
  private readonly ttftMs: number
  /** Time between tokens; 0 when tokens are not paced. */
  private readonly gapMs: number
  private readonly failureRate: number
  private readonly failureStatus: number
  private readonly maxTokens: number
  private readonly dimensions: number
  private readonly random: () => number

  constructor(options: SimulatorOptions = {}) {
    this.name = options.name ?? 'sim'
    this.ttftMs = options.ttftMs ?? 0
    const tokensPerSecond = options.tokensPerSecond ?? 0
    this.gapMs = tokensPerSecond > 0 ? 1000 / tokensPerSecond : 0
    this.failureRate = options.failureRate ?? 0
    this.failureStatus = options.failureStatus ?? 500
    this.maxTokens = options.maxTokens ?? 16
    this.dimensions = options.dimensions ?? 16
    this.random = options.random ?? Math.random
  }

  async chat(request: ChatRequest, context: CallContext): Promise<ChatCompletion> {
    this.admit(context)
    const choices = this.compose(request)
    const longest = Math.max(1, ...choices.map((choice) => choice.tokens.length))
    await pause(this.ttftMs + (longest - 1) * this.gapMs, context.signal, this.name)
    return {
      id: completionId(),
      object: 'chat.completion',
      created: now(),
      model: request.model,
      choices: choices.map((choice, index) => ({
        index,
        message: { role: 'assistant', content: choice.tokens.join(' ') },
        finish_reason: choice.finishReason,
        logprobs: null,
      })),
      usage: this.usage(request, choices),
    }
  }

  async *chatStream(request: ChatRequest, context: CallContext): AsyncGenerator<ChatChunk, void, undefined> {
    this.admit(context)
    const choices = this.compose(request)
    const base = {
      id: completionId(),
      object: 'chat.completion.chunk' as const,
      created: now(),
      model: request.model,
    }
    await pause(this.ttftMs, context.signal, this.name)
    // Paced against the clock, not per gap, so timer lateness does not add up over a long answer.
    const firstAt = performance.now()
    const longest = Math.max(1, ...choices.map((choice) => choice.tokens.length))
    for (let position = 0; position < longest; position++) {
      if (position > 0)
        await pause(firstAt + position * this.gapMs - performance.now(), context.signal, this.name)
      for (const [index, choice] of choices.entries()) {
        // A choice with no tokens still announces its role, so every choice opens the same way.
        if (position > 0 && position >= choice.tokens.length) continue
        const token = choice.tokens[position]
        const content = token === undefined ? '' : position === 0 ? token : ` ${token}`
        const delta = position === 0 ? { role: 'assistant', content } : { content }
        yield { ...base, choices: [{ index, delta, finish_reason: null, logprobs: null }] }
      }
    }
    if (context.signal.aborted) throw abortedError(this.name, context.signal.reason)
    for (const [index, choice] of choices.entries())
      yield { ...base, choices: [{ index, delta: {}, finish_reason: choice.finishReason, logprobs: null }] }
    if (request.stream_options?.include_usage)
      yield { ...base, choices: [], usage: this.usage(request, choices) }
  }

  async embeddings(request: EmbeddingRequest, context: CallContext): Promise<EmbeddingResponse> {
    this.admit(context)
    const dimensions = request.dimensions ?? this.dimensions
    const inputs = embeddingInputs(request.input)
    await pause(this.ttftMs, context.signal, this.name)
    const promptTokens = inputs.reduce((sum, input) => sum + input.tokens, 0)
    return {
      object: 'list',
      data: inputs.map((input, index) => ({
        object: 'embedding',
        index,
        embedding: unitVector(hash32(input.key), dimensions),
      })),
      model: request.model,
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    }
  }

  /** Refuses aborted calls, and the share of calls the failure rate says should fail. */
  private admit(context: CallContext): void {
    if (context.signal.aborted) throw abortedError(this.name, context.signal.reason)
    if (this.failureRate > 0 && this.random() < this.failureRate)
      throw new UpstreamError({
        kind: 'http',
        status: this.failureStatus,
        message: `Simulated failure from ${this.name} (HTTP ${this.failureStatus}).`,
        upstreamCode: 'simulated_failure',
      })
  }

  private compose(request: ChatRequest): SimChoice[] {
    const prompt = request.messages.map((message) => `${message.role}\u0000${contentText(message.content)}`)
    const seed = hash32(`${prompt.join('\u0001')}\u0002${request.seed ?? ''}`)
    const cap = Math.max(0, Math.floor(request.max_completion_tokens ?? request.max_tokens ?? this.maxTokens))
    const shortest = Math.ceil(this.maxTokens / 2)
    const count = Math.max(1, Math.floor(request.n ?? 1))
    return Array.from({ length: count }, (_, index) => {
      const random = seededRandom(seed + index * 0x9e3779b9)
      const natural = shortest + Math.floor(random() * (this.maxTokens - shortest + 1))
      const length = Math.min(natural, cap)
      const tokens = Array.from({ length }, () => words[Math.floor(random() * words.length)] ?? 'token')
      return { tokens, finishReason: length < natural ? 'length' : 'stop' }
    })
  }

  private usage(request: ChatRequest, choices: SimChoice[]): WireUsage {
    const prompt = countPromptTokens(request.messages)
    const completion = choices.reduce((sum, choice) => sum + countTokens(choice.tokens.join(' ')), 0)
    return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
  }
}

/** A deterministic vector of unit length, so cosine similarity behaves as with a real model. */
export function unitVector(seed: number, dimensions: number): number[] {
  const random = seededRandom(seed)
  const vector = Array.from({ length: dimensions }, () => random() * 2 - 1)
  const norm = Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0)) || 1
  return vector.map((value) => value / norm)
}
