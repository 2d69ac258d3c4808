/**
 * One trace per request. The server span opens when the request arrives (continuing an
 * incoming `traceparent`) and its context goes onto `exchange.upstreamHeaders`, so upstream
 * calls carry the same trace. The pipeline's steps are not traced where they run: the
 * Exchange records them as phases, and at the end of the request each becomes a child span
 * with its own start and end, so no other plugin depends on the tracing API.
 *
 * With no SDK behind the API every span is non-recording and this module stops at once:
 * tracing that is off costs one no-op span per request (see bench/tracing.ts).
 */
import {
  type Attributes,
  type Context,
  defaultTextMapSetter,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import type { Exchange } from '../exchange'

type Phase = Exchange['phases'][number]

/** What the server span needs to know when the request is over. */
export interface RequestEnd {
  method: string
  route: string
  status: number
  /** performance.now() of the last byte. */
  end: number
  exchange: Exchange | undefined
}

/**
 * performance.now() as epoch ms. Given performance timestamps, the SDK corrects each span by
 * its own reading of Date.now(), whose millisecond steps would shift siblings against each
 * other; epoch times are taken as they are, so a phase and its parent line up exactly.
 */
const epoch = (time: number) => performance.timeOrigin + time

const headerGetter: TextMapGetter<Headers> = {
  get: (headers, key) => headers.get(key) ?? undefined,
  keys: (headers) => [...headers.keys()],
}

/** GenAI operation names (OpenTelemetry semantic conventions) of the model routes. */
const operations: Record<string, string> = {
  '/v1/chat/completions': 'chat',
  '/v1/embeddings': 'embeddings',
}

export class RequestTracer {
  private readonly tracer: Tracer
  private readonly propagator = new W3CTraceContextPropagator()

  constructor(provider: TracerProvider, version: string) {
    this.tracer = provider.getTracer('tollgate', version)
  }

  /**
   * Opens the server span, started at `start` (performance.now()), as a child of the
   * incoming `traceparent` if there is one. Null when nothing records.
   */
  start(request: Request, path: string, start: number): Span | null {
    const parent = this.propagator.extract(ROOT_CONTEXT, request.headers, headerGetter)
    const span = this.tracer.startSpan(
      request.method,
      {
        kind: SpanKind.SERVER,
        startTime: epoch(start),
        attributes: { 'http.request.method': request.method, 'url.path': path },
      },
      parent,
    )
    return span.isRecording() ? span : null
  }

  /** Puts the span's context into the headers every upstream call of the exchange carries. */
  propagate(span: Span, exchange: Exchange): void {
    this.propagator.inject(trace.setSpan(ROOT_CONTEXT, span), exchange.upstreamHeaders, defaultTextMapSetter)
  }

  /** Names and closes the server span, with the exchange's attributes and phases as children. */
  finish(span: Span, { method, route, status, end, exchange }: RequestEnd): void {
    span.updateName(`${method} ${route}`)
    span.setAttributes({ 'http.route': route, 'http.response.status_code': status })
    if (exchange) {
      span.setAttributes(exchangeAttributes(exchange))
      const parent = trace.setSpan(ROOT_CONTEXT, span)
      for (const phase of exchange.phases) this.phaseSpan(phase, exchange, parent)
    }
    const failed = status >= 500 || exchange?.settlement?.outcome === 'error'
    if (failed) span.setStatus({ code: SpanStatusCode.ERROR, message: exchange?.settlement?.errorCode })
    span.end(epoch(end))
  }

  private phaseSpan(phase: Phase, exchange: Exchange, parent: Context): void {
    const upstream = phase.name.startsWith('upstream')
    const attributes: Attributes = upstream ? attemptAttributes(phase, exchange) : phase.attributes
    const span = this.tracer.startSpan(
      phase.name,
      { kind: upstream ? SpanKind.CLIENT : SpanKind.INTERNAL, startTime: epoch(phase.start), attributes },
      parent,
    )
    if ('error' in phase.attributes)
      span.setStatus({ code: SpanStatusCode.ERROR, message: String(phase.attributes.error) })
    span.end(epoch(phase.end))
  }
}

/**
 * An upstream attempt as the pipeline recorded it (`provider`, `model`, `attempt`, `error`),
 * with the GenAI attributes of the call and whether it was a retry or a fallback.
 */
function attemptAttributes(phase: Phase, exchange: Exchange): Attributes {
  const { provider, model, attempt } = phase.attributes
  const attributes: Attributes = { ...phase.attributes }
  const operation = operations[exchange.route]
  if (operation) attributes['gen_ai.operation.name'] = operation
  const system = typeof provider === 'string' ? provider : exchange.provider
  if (system) attributes['gen_ai.system'] = system
  const requested = typeof model === 'string' ? model : exchange.servedModel
  if (requested) attributes['gen_ai.request.model'] = requested
  if (typeof attempt === 'number') attributes['tollgate.retry'] = attempt > 1
  attributes['tollgate.fallback'] = requested !== null && requested !== exchange.requestedModel
  return attributes
}

/** The GenAI semantic-convention attributes, and tollgate's own, of a model request. */
function exchangeAttributes(exchange: Exchange): Attributes {
  const attributes: Attributes = { 'tollgate.request_id': exchange.id }
  if (exchange.principal) attributes['tollgate.tier'] = exchange.principal.tier
  if (exchange.requestedModel === null) return attributes
  const operation = operations[exchange.route]
  if (operation) attributes['gen_ai.operation.name'] = operation
  if (exchange.provider) attributes['gen_ai.system'] = exchange.provider
  attributes['gen_ai.request.model'] = exchange.requestedModel
  if (!exchange.settlement) return attributes
  const served = exchange.upstreamModel ?? exchange.servedModel
  if (served) attributes['gen_ai.response.model'] = served
  attributes['gen_ai.usage.input_tokens'] = exchange.usage.promptTokens
  attributes['gen_ai.usage.output_tokens'] = exchange.usage.completionTokens
  if (exchange.finishReasons.length > 0) attributes['gen_ai.response.finish_reasons'] = exchange.finishReasons
  attributes['tollgate.cache'] = exchange.cacheStatus
  attributes['tollgate.outcome'] = exchange.settlement.outcome
  attributes['tollgate.cost_usd'] = Number(exchange.costNanoUsd) / 1e9
  if (exchange.savedNanoUsd > 0n) attributes['tollgate.saved_usd'] = Number(exchange.savedNanoUsd) / 1e9
  attributes['tollgate.attempts'] = exchange.attempts
  if (exchange.fallbackSteps > 0) attributes['tollgate.fallback_steps'] = exchange.fallbackSteps
  return attributes
}
