/**
 * Every metric family the gateway exposes, declared once on one registry. Names follow the
 * Prometheus conventions (base units, `_total` counters, `_seconds`, `_bytes`) under the
 * `tollgate_` prefix; no label can hold a user id, a key or free text (see labels.ts).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'

/** Request durations: 1 ms to 60 s, dense where interactive latencies sit. */
export const durationBuckets = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
]
/** Time the gateway itself adds, and store round trips: 100 µs to 2.5 s. */
export const fastBuckets = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5,
]

export function createFamilies(registers: Registry[]) {
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers })
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Gauge<L>({ name, help, labelNames, registers })
  const histogram = <L extends string>(
    name: string,
    help: string,
    buckets: number[],
    labelNames: readonly L[] = [],
  ) => new Histogram<L>({ name, help, labelNames, buckets, registers })

  return {
    buildInfo: gauge('tollgate_build_info', 'Always 1; the version label says what runs.', ['version']),
    httpRequests: counter('tollgate_http_requests_total', 'HTTP requests answered.', [
      'method',
      'route',
      'status',
    ]),
    httpDuration: histogram(
      'tollgate_http_request_duration_seconds',
      'Time from request to the last byte of the answer (the end of the stream for SSE).',
      durationBuckets,
      ['method', 'route'],
    ),
    httpInFlight: gauge('tollgate_http_requests_in_flight', 'HTTP requests being answered now.'),
    modelRequests: counter('tollgate_model_requests_total', 'Model requests by how they ended.', [
      'model',
      'served_model',
      'tier',
      'outcome',
    ]),
    upstreamDuration: histogram(
      'tollgate_upstream_duration_seconds',
      'Duration of each upstream attempt.',
      durationBuckets,
      ['provider', 'model'],
    ),
    timeToFirstToken: histogram(
      'tollgate_time_to_first_token_seconds',
      'Time from request to the first streamed token.',
      durationBuckets,
      ['model'],
    ),
    tokens: counter('tollgate_tokens_total', 'Tokens by the model that served them.', [
      'model',
      'tier',
      'type',
    ]),
    cost: counter('tollgate_cost_usd_total', 'Cost of upstream usage in USD.', ['model', 'tier']),
    overhead: histogram(
      'tollgate_gateway_overhead_seconds',
      'Request latency minus the time spent waiting on upstreams.',
      fastBuckets,
      ['route'],
    ),
    streamsActive: gauge('tollgate_sse_streams_active', 'Server-Sent Event streams being relayed now.'),
    quotaDecisions: counter('tollgate_quota_decisions_total', 'Quota admission decisions.', [
      'limit',
      'outcome',
    ]),
    quotaCheck: histogram(
      'tollgate_quota_check_duration_seconds',
      'Time a quota admission took.',
      fastBuckets,
    ),
    quotaFallback: gauge(
      'tollgate_quota_fallback_active',
      '1 while quotas are enforced by the fallback because the store cannot answer.',
    ),
    authFailures: counter(
      'tollgate_auth_failures_total',
      'Refused credentials, by reason (missing, invalid, admin, throttled).',
      ['reason'],
    ),
    cacheLookups: counter('tollgate_cache_lookups_total', 'Cache lookups by result.', ['cache', 'result']),
    cacheStores: counter('tollgate_cache_stores_total', 'Entries written to the cache.', ['cache']),
    cacheStoredBytes: counter('tollgate_cache_stored_bytes_total', 'Bytes written to the cache.', ['cache']),
    cacheOversize: counter(
      'tollgate_cache_oversize_total',
      'Answers not cached because they were too large.',
    ),
    cacheSaved: counter(
      'tollgate_cache_saved_usd_total',
      'Upstream cost that cached answers saved, in USD.',
      ['model', 'tier'],
    ),
    breakerState: gauge('tollgate_breaker_state', '1 for the state each breaker is in, 0 for the others.', [
      'target',
      'state',
    ]),
    breakerTransitions: counter('tollgate_breaker_transitions_total', 'Breaker state changes.', [
      'target',
      'from',
      'to',
    ]),
    breakerRejections: counter(
      'tollgate_breaker_rejections_total',
      'Calls refused by an open breaker without reaching the upstream.',
      ['target'],
    ),
    retries: counter('tollgate_upstream_retries_total', 'Upstream attempts that were retries.', ['target']),
    fallbacks: counter('tollgate_upstream_fallbacks_total', 'Answers served by a fallback model.', ['model']),
    timeouts: counter('tollgate_upstream_timeouts_total', 'Upstream calls cut by a timeout.', [
      'target',
      'kind',
    ]),
    staleAnswers: counter(
      'tollgate_stale_answers_total',
      'Stale cache answers served because every upstream was down.',
      ['model'],
    ),
    ledgerBacklog: gauge('tollgate_ledger_backlog', 'Ledger events waiting to be written.'),
    ledgerFlush: histogram(
      'tollgate_ledger_flush_duration_seconds',
      'Time a ledger batch write took.',
      durationBuckets,
    ),
    ledgerFlushFailures: counter('tollgate_ledger_flush_failures_total', 'Ledger batch writes that failed.'),
    ledgerWritten: counter('tollgate_ledger_events_written_total', 'Ledger events written to the database.'),
    ledgerDropped: counter(
      'tollgate_ledger_events_dropped_total',
      'Ledger events dropped by the overflow policy.',
    ),
    dependencyUp: gauge('tollgate_dependency_up', '1 when the dependency answered its last check.', [
      'dependency',
    ]),
    dependencyLatency: gauge(
      'tollgate_dependency_latency_seconds',
      'Round trip of the last dependency check that succeeded.',
      ['dependency'],
    ),
  }
}

export type Families = ReturnType<typeof createFamilies>
