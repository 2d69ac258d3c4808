/**
 * Resilience around every upstream call: the part that knows models and providers. For a
 * requested model it runs the chain [model, ...fallbacks] through the breaker plugin (each
 * target guarded by its breaker, with retries and time limits; open targets skipped); when
 * every target is down it offers the route's stale cache answer, else answers 503
 * `upstream_unavailable` with Retry-After (the earliest moment any target may take calls
 * again), or 504 `upstream_timeout` when time ran out. It records on the Exchange which model
 * served, at which price, after how many attempts (each a traced phase), and gives the route
 * the headers that tell the client so.
 */
import {
  type BreakerService,
  type CallTimer,
  type ChainStep,
  type FailureInfo,
  guardStream,
  type Permit,
  type TimeoutLimits,
  type Verdict,
} from '../../plugins/breaker'
import { ApiError, type Exchange, type Price } from '../../plugins/exchange'
import { breakerTarget, type ModelConfig, type ModelResilience } from '../config'
import type {
  CallContext,
  ChatChunk,
  ChatCompletion,
  ChatRequest,
  EmbeddingRequest,
  EmbeddingResponse,
  Provider,
} from './provider'
import { UpstreamError } from './provider'
import type { ModelRouter, ResolvedModel } from './router'

export interface ResilienceOptions {
  router: ModelRouter
  breakers: BreakerService
  /** Retries and time limits per model name (config's `breaker.models`). */
  models: Record<string, ModelResilience>
  /** A model's price, recorded on the Exchange for the model that actually served. */
  priceOf: (model: ModelConfig) => Price
  /** Whether a stale cache answer may serve when no upstream can (config's `breaker.staleCache`). */
  staleCache: boolean
}

export interface CallOptions<S> {
  /** Tied to the client: its abort cancels every attempt and is never counted as a failure. */
  signal: AbortSignal
  /** The cache's answer past its TTL, asked only when every target failed; null when it has none. */
  stale?: (exchange: Exchange) => Promise<S | null>
  /** The requested model as the route resolved it already, so it is not looked up again. */
  resolved?: ResolvedModel
}

/** `x-tollgate-model`, `x-tollgate-fallback`, `x-tollgate-attempts` (and `x-cache: STALE`). */
export type ResilienceHeaders = Record<string, string>

export type Answer<T, S> =
  | { stale: false; value: T; headers: ResilienceHeaders }
  | { stale: true; value: S; headers: ResilienceHeaders }

export interface OpenedStream {
  /** Under guard: idle and total limits apply, and its end gives the breaker its verdict. */
  iterator: AsyncIterator<ChatChunk>
  first: IteratorResult<ChatChunk>
}

type PhaseAttributes = Record<string, string | number>

/** One target of a chain, with all a walk needs of it that is fixed at startup. */
interface Target extends ResolvedModel {
  /** Its breaker (`breakerTarget`). */
  target: string
  retry: ModelResilience['retry']
  /** The limits of a JSON call and of a stream (see `phasesOf`). */
  jsonTimeouts: TimeoutLimits
  streamTimeouts: TimeoutLimits
  /** The chain's whole-call limit when this target is the requested model. */
  totalMs: number
}

interface Walk {
  exchange: Exchange
  call: CallOptions<unknown>
  /** The model name the client asked for. */
  requested: string
  kind: ModelConfig['kind']
  streaming?: boolean
}
type Attempt<T> = (provider: Provider, model: string, context: CallContext, timer: CallTimer) => Promise<T>

/** The attempt that served, still open: the caller ends its limits, verdict and traced phase. */
interface Held {
  target: string
  /** The step's classifier, which a stream's guard goes on using. */
  classify: ChainStep<unknown>['classify']
  permit: Permit
  timer: CallTimer
  start: number
  attributes: PhaseAttributes
}

type Walked<T> =
  | { ok: true; value: T; headers: ResilienceHeaders; held: Held }
  | { ok: false; primary: ModelConfig; steps: number; error: ApiError }

/**
 * The limits that apply to a call: a JSON answer arrives whole (its headers too, from
 * OpenAI), so only the total bounds it; a stream has every phase, except that a simulator
 * has no network hop whose response headers would end a connect phase.
 */
function phasesOf(provider: Provider, timeouts: TimeoutLimits, streaming: boolean): TimeoutLimits {
  if (!streaming) return { ...timeouts, connectMs: 0, ttftMs: 0, idleMs: 0 }
  return provider.type === 'simulator' ? { ...timeouts, connectMs: 0 } : timeouts
}

const headersFor = (model: string, steps: number, attempts: number): ResilienceHeaders => ({
  'x-tollgate-model': model,
  'x-tollgate-fallback': String(steps),
  'x-tollgate-attempts': String(attempts),
})

/** A JSON answer is complete: its limits stop, the breaker hears a success, tracing gets a phase. */
function answered<T>(exchange: Exchange, walked: { value: T; held: Held }): T {
  const { timer, permit, start, attributes } = walked.held
  timer.done()
  permit.settle('success')
  exchange.recordPhase('upstream', start, attributes)
  return walked.value
}

/** 504 when time ran out anywhere on the way, else 503 with when to come back. */
function exhaustedError(model: string, attempts: number, timedOut: boolean, reopensInMs: number): ApiError {
  const headers: Record<string, string> = { 'x-tollgate-attempts': String(attempts) }
  if (timedOut) {
    const message = `No upstream answered for '${model}' in time.`
    return new ApiError({ status: 504, code: 'upstream_timeout', message, headers })
  }
  headers['retry-after'] = String(Math.max(1, Math.ceil(reopensInMs / 1000)))
  const message = `No upstream can serve '${model}' now; retry in ${headers['retry-after']} s.`
  return new ApiError({ status: 503, code: 'upstream_unavailable', message, headers })
}

/**
 * Records on the Exchange which model serves and at which price: the route for the model it
 * resolved (admission prices the reservation with it), then the walk for the one that served.
 */
export function serveWith(exchange: Exchange, model: ModelConfig, price: Price, fallbackSteps = 0): void {
  exchange.servedModel = model.name
  exchange.provider = model.provider
  exchange.upstreamModel = model.upstreamModel
  exchange.price = price
  exchange.fallbackSteps = fallbackSteps
}

const cancelled = () => new UpstreamError({ kind: 'aborted', status: 499, message: 'Call aborted.' })

/** What an attempt's error means: our timers first, then the client, then the upstream's answer. */
function classifier(target: string, signal: AbortSignal) {
  return (error: unknown, timer: CallTimer): FailureInfo => {
    const info = (verdict: Verdict, reason: string, surfaced: unknown, upstream?: UpstreamError) => ({
      verdict,
      reason,
      error: surfaced,
      retryable: upstream?.retryable ?? false,
      retryAfterMs: upstream?.retryAfterMs ?? null,
    })
    const kind = timer.expired
    if (kind) {
      const message = `Upstream ${target} sent ${(timer.signal.reason as Error).message}.`
      const timeout = new UpstreamError({
        kind: 'timeout',
        status: 504,
        message,
        retryable: kind !== 'total',
      })
      return info('failure', `timeout:${kind}`, timeout, timeout)
    }
    if (signal.aborted) return info('neutral', 'cancelled', cancelled())
    if (!(error instanceof UpstreamError) || error.kind === 'aborted') return info('neutral', 'error', error)
    const upstreamFault = error.kind !== 'http' || error.status >= 500 || error.status === 429
    const reason = error.kind === 'http' ? `http ${error.status}` : error.kind
    return info(upstreamFault ? 'failure' : 'success', reason, error, error)
  }
}

export class Resilience {
  private readonly chains = new Map<string, Target[]>()

  constructor(private readonly options: ResilienceOptions) {
    const targets = new Map<string, Target>()
    for (const model of options.router.list()) {
      const route = options.router.resolve(model.name)
      const { retry, timeouts } = this.settingsOf(model)
      targets.set(model.name, {
        ...route,
        target: breakerTarget(model),
        retry,
        jsonTimeouts: phasesOf(route.provider, timeouts, false),
        streamTimeouts: phasesOf(route.provider, timeouts, true),
        totalMs: timeouts.totalMs,
      })
    }
    for (const model of options.router.list()) {
      const chain = [...new Set([model.name, ...model.fallbacks])].map((name) => {
        // resolve() throws the error that names an unknown fallback.
        const target = targets.get(options.router.resolve(name).model.name)!
        if (target.model.kind !== model.kind)
          throw new Error(`model ${model.name}: fallback ${name} is not a ${model.kind} model`)
        return target
      })
      this.chains.set(model.name, chain)
    }
  }

  /** A chat completion from the first target that can serve `request.model` (the client's name). */
  async chat<S>(
    exchange: Exchange,
    request: ChatRequest,
    call: CallOptions<S>,
  ): Promise<Answer<ChatCompletion, S>> {
    const walked = await this.walk(
      { exchange, call, requested: request.model, kind: 'chat' },
      (p, model, context, timer) => timer.watch(p.chat({ ...request, model }, context)),
    )
    if (!walked.ok) return this.staleOrThrow(exchange, walked, call)
    return { stale: false, value: answered(exchange, walked), headers: walked.headers }
  }

  /**
   * Opens a stream and waits for its first chunk, the retry boundary: until then failures
   * are retried and fall back; after it the route relays `iterator`, whose failures reach
   * the client as an SSE error event (relayStream does that).
   */
  async chatStream<S>(
    exchange: Exchange,
    request: ChatRequest,
    call: CallOptions<S>,
  ): Promise<Answer<OpenedStream, S>> {
    const walk = { exchange, call, requested: request.model, kind: 'chat', streaming: true } as const
    const walked = await this.walk(walk, async (p, model, context, timer) => {
      const iterator = p.chatStream({ ...request, model }, context)[Symbol.asyncIterator]()
      return { iterator, first: await timer.watch(iterator.next()) }
    })
    if (!walked.ok) return this.staleOrThrow(exchange, walked, call)
    const { iterator, first } = walked.value
    const { start, attributes, classify } = walked.held
    const onEnd = (verdict: Verdict, reason: string) =>
      exchange.recordPhase(
        'upstream',
        start,
        verdict === 'failure' ? { ...attributes, error: reason } : attributes,
      )
    const held = { ...walked.held, first, onEnd }
    const guarded = guardStream(this.options.breakers, held, iterator, classify)
    return { stale: false, value: { iterator: guarded, first }, headers: walked.headers }
  }

  async embeddings(
    exchange: Exchange,
    request: EmbeddingRequest,
    call: CallOptions<never>,
  ): Promise<{ value: EmbeddingResponse; headers: ResilienceHeaders }> {
    const walk = { exchange, call, requested: request.model, kind: 'embedding' } as const
    const walked = await this.walk(walk, (p, model, context, timer) =>
      timer.watch(p.embeddings({ ...request, model }, context)),
    )
    if (!walked.ok) throw walked.error
    return { value: answered(exchange, walked), headers: walked.headers }
  }

  private async walk<T>(walk: Walk, attempt: Attempt<T>): Promise<Walked<T>> {
    const { exchange, call, requested, kind, streaming = false } = walk
    const { breakers } = this.options
    const primary = (call.resolved ?? this.options.router.resolve(requested, kind)).model
    const chain = this.chains.get(primary.name)!
    const totalMs = chain[0]!.totalMs
    const deadline = totalMs > 0 ? breakers.now() + totalMs : Number.POSITIVE_INFINITY
    const headers = exchange.upstreamHeaders
    // Each step's latest attempt: when it started and what tracing records of it.
    const latest: Array<{ start: number; attributes: PhaseAttributes }> = []
    const steps = chain.map((entry, step): ChainStep<T> => {
      const { model, provider, target, retry } = entry
      const classify = classifier(target, call.signal)
      return {
        target,
        retry,
        timeouts: streaming ? entry.streamTimeouts : entry.jsonTimeouts,
        classify,
        async attempt(timer, number) {
          const current = {
            start: performance.now(),
            attributes: { provider: model.provider, model: model.name, attempt: number },
          }
          latest[step] = current
          // The provider's own limit runs on the attempt's timer: one timer and one signal per call.
          const context: CallContext = {
            signal: timer.signal,
            headers,
            onResponse: () => timer.connected(),
            deadline: (ms) => timer.limit(ms),
          }
          try {
            return await attempt(provider, model.upstreamModel, context, timer)
          } catch (error) {
            exchange.recordPhase('upstream', current.start, {
              ...current.attributes,
              error: classify(error, timer).reason,
            })
            throw error
          }
        },
      }
    })
    const outcome = await breakers.chain(steps, deadline, call.signal)
    exchange.attempts = outcome.attempts
    if (!outcome.ok) {
      if (outcome.stop === 'cancelled') throw cancelled()
      if (outcome.stop === 'refused') throw outcome.error
      const reopensIn = outcome.retryAt - breakers.now()
      const error = exhaustedError(primary.name, outcome.attempts, outcome.timedOut, reopensIn)
      return { ok: false, primary, steps: chain.length, error }
    }
    const served = chain[outcome.step]!.model
    this.serveWith(exchange, served, outcome.step)
    if (outcome.step > 0)
      breakers.metrics.emit({
        type: 'fallback',
        model: primary.name,
        servedBy: served.name,
        steps: outcome.step,
      })
    const { permit, timer, value, step, attempts } = outcome
    const { target, classify } = steps[step]!
    const held = { target, classify, permit, timer, ...latest[step]! }
    return { ok: true, value, headers: headersFor(served.name, step, attempts), held }
  }

  /** Every target failed: the stale cache answer when allowed and present, else the walk's error. */
  private async staleOrThrow<S>(
    exchange: Exchange,
    failed: Walked<unknown> & { ok: false },
    call: CallOptions<S>,
  ) {
    const stale = this.options.staleCache && call.stale ? await call.stale(exchange).catch(() => null) : null
    if (stale === null) throw failed.error
    this.serveWith(exchange, failed.primary, failed.steps)
    exchange.cacheStatus = 'STALE'
    this.options.breakers.metrics.emit({ type: 'stale', model: failed.primary.name })
    const headers = {
      ...headersFor(failed.primary.name, failed.steps, exchange.attempts),
      'x-cache': 'STALE',
    }
    return { stale: true as const, value: stale, headers }
  }

  private settingsOf(model: ModelConfig): ModelResilience {
    const settings = this.options.models[model.name]
    if (!settings) throw new Error(`model ${model.name}: no resilience settings`)
    return settings
  }

  private serveWith(exchange: Exchange, model: ModelConfig, steps: number): void {
    serveWith(exchange, model, this.options.priceOf(model), steps)
  }
}
