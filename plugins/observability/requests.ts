/**
 * Follows each HTTP request from arrival to its last byte and then records it once: the
 * HTTP metrics, the request log line and the server span. A request whose Exchange settles
 * is recorded after settlement (for a stream, its end), so the line and the span carry the
 * usage, the cost and every phase; any other request is recorded when its answer is sent.
 */
import type { Span } from '@opentelemetry/api'
import { StatusMap } from 'elysia'
import { Exchange } from '../exchange'
import { routeLabel } from './labels'
import type { GatewayMetrics } from './metrics'
import { type RequestLogger, requestLogFields } from './request-log'
import type { RequestTracer } from './tracing'

interface RequestState {
  start: number
  /** The status of an answer built as a Response (errors), which `set.status` may not show. */
  status: number | null
  /** The server span; null when nothing records or the path is quiet; undefined until tried. */
  span: Span | null | undefined
}

/** The lifecycle context fields this module reads; Elysia's contexts all have them. */
export interface RequestContext {
  request: Request
  path: string
  route?: string
  body?: unknown
  responseValue?: unknown
  set: { status?: number | keyof typeof StatusMap; headers: Record<string, unknown> }
}

export interface RequestObserverOptions {
  metrics: GatewayMetrics
  tracer: RequestTracer
  log: RequestLogger | null
  logBodies: boolean
  /** Paths (probes, scrapes) logged at debug instead of info and never traced. */
  quietPaths: ReadonlySet<string>
  /** A record that failed after the answer left has nobody else to tell. */
  onError: (error: unknown) => void
}

/** The Exchange the exchange plugin derived, if this request got that far. */
export function exchangeOf(context: object): Exchange | undefined {
  const candidate = (context as { exchange?: unknown }).exchange
  return candidate instanceof Exchange ? candidate : undefined
}

/** The answer as the handler returned it; a stream or a built Response has no body to show. */
function answerBody(context: RequestContext, exchange: Exchange | undefined): unknown {
  if (exchange?.stream || context.responseValue instanceof Response) return undefined
  return context.responseValue
}

function statusOf(context: RequestContext, noted: number | null): number {
  if (noted !== null) return noted
  // No route matched: the error handler answered 404, which `set` never saw.
  if (!context.route) return 404
  const status = context.set.status ?? 200
  return typeof status === 'number' ? status : StatusMap[status]
}

export class RequestObserver {
  private readonly states = new WeakMap<Request, RequestState>()

  constructor(private readonly options: RequestObserverOptions) {}

  opened(request: Request): void {
    this.states.set(request, { start: performance.now(), status: null, span: undefined })
    this.options.metrics.requestStarted()
  }

  /** Opens the server span once the Exchange exists, so upstream calls carry its context. */
  routed(context: RequestContext): void {
    const state = this.states.get(context.request)
    const tracer = this.options.tracer
    if (!state || state.span !== undefined) return
    state.span = this.options.quietPaths.has(context.path)
      ? null
      : tracer.start(context.request, context.path, state.start)
    const exchange = exchangeOf(context)
    if (state.span && exchange) tracer.propagate(state.span, exchange)
  }

  answered(context: RequestContext): void {
    const state = this.states.get(context.request)
    if (state && context.responseValue instanceof Response) state.status = context.responseValue.status
  }

  closed(context: RequestContext): void {
    const state = this.states.get(context.request)
    if (!state) return
    this.states.delete(context.request)
    const exchange = exchangeOf(context)
    const status = statusOf(context, state.status)
    // A stream's answer is still flowing: it ends when its Exchange settles.
    const streaming = exchange?.stream === true && !exchange.isSettled && status < 400
    if (!exchange || !(exchange.isSettled || streaming)) {
      this.record(context, state, status, performance.now())
      return
    }
    const end = streaming ? null : performance.now()
    if (streaming) this.options.metrics.streamOpened()
    exchange.settled
      .then(() => {
        if (streaming) this.options.metrics.streamClosed()
        this.record(context, state, status, end ?? exchange.settledAt ?? performance.now())
      })
      .catch(this.options.onError)
  }

  private record(context: RequestContext, state: RequestState, status: number, end: number): void {
    const { metrics, tracer, log, logBodies, quietPaths } = this.options
    const exchange = exchangeOf(context)
    const method = context.request.method
    const route = routeLabel(context.route)
    metrics.requestFinished(method, context.route, status, (end - state.start) / 1000)
    if (exchange && exchange.requestedModel !== null && !exchange.isSettled)
      metrics.recordRefusal(exchange, status)
    // A request no route took (404, parse errors) was never routed: its span opens here, once.
    if (state.span === undefined && !quietPaths.has(context.path))
      state.span = tracer.start(context.request, context.path, state.start)
    if (log) {
      const requestId = exchange?.id ?? context.set.headers['x-request-id']
      const fields = requestLogFields({
        requestId: typeof requestId === 'string' ? requestId : undefined,
        traceId: state.span?.spanContext().traceId,
        method,
        route,
        status,
        latencyMs: end - state.start,
        exchange,
        ...(logBodies ? { bodies: { request: context.body, response: answerBody(context, exchange) } } : {}),
      })
      if (quietPaths.has(context.path)) log.debug('request', fields)
      else log.info('request', fields)
    }
    if (state.span) tracer.finish(state.span, { method, route, status, end, exchange })
  }
}
