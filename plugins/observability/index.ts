/**
 * Observability, the only door into plugins/observability: Prometheus metrics at
 * `GET /metrics`, one OpenTelemetry trace per request (GenAI semantic conventions), and one
 * JSON log line per request. It records HTTP traffic and every settled Exchange itself;
 * the other plugins report through `metrics` (decorated), whose methods match their
 * callbacks: see GatewayMetrics in metrics.ts.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { type TracerProvider, trace } from '@opentelemetry/api'
import { Elysia } from 'elysia'
import { ApiError, type SettlementHub } from '../exchange'
import { GatewayMetrics } from './metrics'
import { type OtlpTracing, otlpTracing } from './otlp'
import type { RequestLogger } from './request-log'
import { RequestObserver } from './requests'
import type { DependencyProbe } from './sources'
import { RequestTracer } from './tracing'

export { GatewayMetrics } from './metrics'
export type { RequestLogger } from './request-log'

export interface ObservabilityOptions {
  /** The settlement hub: model metrics are taken in its `metrics` phase, the span ends in `trace`. */
  hub: SettlementHub
  /** The gateway's version, for `tollgate_build_info` and the trace resource. */
  version: string
  /**
   * Where the per-request lines go (info; debug for `quietPaths`); null: no request log.
   * @default null
   */
  log?: RequestLogger | null
  /**
   * Adds the request body and the (non-stream) answer to each line. Prompts and completions
   * then reach the logs: for debugging only.
   * @default false
   */
  logBodies?: boolean
  /**
   * Paths logged at debug instead of info and never traced: probes and scrapes.
   * @default ['/metrics', '/health/live', '/health/ready', '/health/startup']
   */
  quietPaths?: string[]
  /**
   * Model names clients may send (label values); any other reads `other`.
   * @default the first 64 names seen
   */
  models?: string[]
  /**
   * Tier names (label values); any other reads `other`.
   * @default the first 64 names seen
   */
  tiers?: string[]
  /**
   * Bearer token `GET /metrics` requires; null leaves it open.
   * @default null
   */
  metricsToken?: string | null
  /**
   * Process and runtime metrics (CPU, memory, event loop, GC) under their standard names.
   * @default true
   */
  processMetrics?: boolean
  /**
   * Daily cost in USD above which the DailyCostHigh alert fires, exported for the rule.
   * @default null
   */
  dailyCostAlertUsd?: number | null
  /**
   * Dependencies checked at each scrape (`tollgate_dependency_up`, `..._latency_seconds`).
   * @default []
   */
  dependencies?: DependencyProbe[]
  /**
   * Longest a dependency check may take at scrape time, in ms.
   * @default 1000
   */
  dependencyTimeoutMs?: number
  /**
   * Export spans over OTLP/HTTP with the SDK, which the plugin loads, owns and flushes on
   * stop. Null: spans go to `tracerProvider`.
   * @default null
   */
  otlp?: { url: string; serviceName: string; sampleRatio: number } | null
  /**
   * Where spans go without `otlp`; tests pass an SDK provider with an in-memory exporter.
   * @default the global API provider: a no-op unless an SDK registered itself
   */
  tracerProvider?: TracerProvider
  /**
   * Called when the tracing SDK cannot be loaded, or recording a finished request fails.
   * @default console.error
   */
  onError?: (error: unknown) => void
}

/** Probes and scrapes: logged at debug, never traced. */
export const defaultQuietPaths = ['/metrics', '/health/live', '/health/ready', '/health/startup']

const sha256 = (text: string) => createHash('sha256').update(text).digest()

/** Compares digests in constant time, so the token cannot be guessed byte by byte. */
function bearerMatches(header: string | undefined, expected: Buffer): boolean {
  const token = header?.match(/^Bearer\s+(.+)$/i)?.[1]
  return token !== undefined && timingSafeEqual(sha256(token), expected)
}

export function observability({
  hub,
  version,
  log = null,
  logBodies = false,
  quietPaths = defaultQuietPaths,
  models,
  tiers,
  metricsToken = null,
  processMetrics = true,
  dailyCostAlertUsd = null,
  dependencies = [],
  dependencyTimeoutMs = 1000,
  otlp = null,
  tracerProvider = trace.getTracerProvider(),
  onError = console.error,
}: ObservabilityOptions) {
  const metrics = new GatewayMetrics({
    version,
    models,
    tiers,
    processMetrics,
    dailyCostAlertUsd,
    dependencies,
    dependencyTimeoutMs,
  })
  const exporter: OtlpTracing | null = otlp ? otlpTracing({ ...otlp, version, onError }) : null
  const observer = new RequestObserver({
    metrics,
    tracer: new RequestTracer(exporter?.provider ?? tracerProvider, version),
    log,
    logBodies,
    quietPaths: new Set(quietPaths),
    onError,
  })
  hub.subscribe('metrics', function recordModelMetrics(exchange) {
    metrics.recordExchange(exchange)
  })
  hub.subscribe('trace', function closeSettlementPhase(exchange) {
    if (exchange.settledAt !== null) exchange.recordPhase('settlement', exchange.settledAt)
  })
  const expected = metricsToken === null ? null : sha256(metricsToken)
  /** Exports the spans still buffered; a no-op without OTLP. */
  const shutdownTracing = async (): Promise<void> => {
    await exporter?.shutdown()
  }

  return (
    new Elysia({ name: 'tollgate/observability', seed: { id: crypto.randomUUID() } })
      .decorate('metrics', metrics)
      // For process shutdown paths that do not stop the app (src/main.ts stops the server).
      .decorate('shutdownTracing', shutdownTracing)
      .onRequest(function openRequest({ request }) {
        observer.opened(request)
      })
      .onTransform({ as: 'global' }, function traceRequest(context) {
        observer.routed(context)
      })
      .mapResponse({ as: 'global' }, function noteAnswerStatus(context) {
        observer.answered(context)
      })
      .onAfterResponse({ as: 'global' }, function closeRequest(context) {
        observer.closed(context)
      })
      .get(
        '/metrics',
        async function scrapeMetrics({ headers }) {
          if (expected && !bearerMatches(headers.authorization, expected))
            throw new ApiError({
              status: 401,
              message: 'GET /metrics needs the metrics bearer token.',
              code: 'invalid_metrics_token',
              headers: { 'www-authenticate': 'Bearer' },
            })
          return new Response(await metrics.render(), { headers: { 'content-type': metrics.contentType } })
        },
        { detail: { summary: 'Prometheus metrics (text exposition format)', tags: ['observability'] } },
      )
      .onStop(function flushSpans() {
        return shutdownTracing()
      })
  )
}
