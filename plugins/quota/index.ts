/**
 * Tiered quotas: request windows, daily token and cost budgets and concurrency, per user
 * and for the whole gateway, exact across instances that share one Redis (or one Redis
 * Cluster), at one round trip per request. The routes call `reserve` before the upstream;
 * settlement reconciles the reservation with actual usage.
 */
import { Elysia } from 'elysia'
import type { SettlementHub } from '../exchange'
import type { Store } from '../store'
import type { GlobalLimits, TierLimits } from './limits'
import { type QuotaDecision, type QuotaFallback, QuotaService } from './quota'

export type { WindowState } from './headers'
export { rateLimitHeaders } from './headers'
export type { GlobalLimits, ScopeLimits, TierLimits, Window } from './limits'
export type { QuotaDecision, QuotaFallback, Reservation, ScopeUsage } from './quota'
export { QuotaService } from './quota'

export interface QuotaOptions {
  /**
   * Off, no request is checked or counted: no limits, budgets, concurrency leases or
   * RateLimit headers, and no Redis round trip; `/v1/usage` then shows empty windows.
   * @default true
   */
  enabled?: boolean
  /** Where counters and leases live: Redis for exact limits across instances, or memory. */
  store: Store
  /** The settlement hub; reconciliation subscribes to its `quota` phase. */
  hub: SettlementHub
  /** Limits per tier name; null fields are unlimited. */
  tiers: Record<string, TierLimits>
  /** Caps over every user together. */
  global: GlobalLimits
  /**
   * What enforces limits while Redis cannot answer: `local` (the same algorithms, per
   * instance), `open` (admit everything) or `closed` (answer 503).
   * @default 'local'
   */
  fallback?: QuotaFallback
  /**
   * Request units each route consumes from the request windows, by route path.
   * @default {}
   */
  routeWeights?: Record<string, number>
  /**
   * Completion tokens reserved when a request sets no `max_tokens`.
   * @default 1024
   */
  defaultMaxTokens?: number
  /**
   * Expiry of a concurrency lease, so a crashed instance's leases free themselves.
   * @default 600000
   */
  leaseTtlMs?: number
  /**
   * Whether a failed upstream call also gives its request units back.
   * @default false
   */
  refundRequestsOnError?: boolean
  /**
   * Clock in epoch ms for tests; null reads the Redis server's TIME inside the scripts, one
   * clock for every instance.
   * @default null
   */
  now?: (() => number) | null
  /**
   * Called with each admission decision and the time the check took, for metrics.
   * @default () => {}
   */
  onDecision?: (decision: QuotaDecision, seconds: number) => void
  /**
   * Called when enforcement moves to the fallback (true) or back to the store (false).
   * @default () => {}
   */
  onFallback?: (active: boolean) => void
}

export function quota({
  enabled = true,
  store,
  hub,
  tiers,
  global,
  fallback = 'local',
  routeWeights = {},
  defaultMaxTokens = 1024,
  leaseTtlMs = 600_000,
  refundRequestsOnError = false,
  now = null,
  onDecision = () => {},
  onFallback = () => {},
}: QuotaOptions) {
  const service = new QuotaService({
    enabled,
    store,
    tiers,
    global,
    fallback,
    routeWeights,
    defaultMaxTokens,
    leaseTtlMs,
    refundRequestsOnError,
    now,
    onDecision,
    onFallback,
  })
  hub.subscribe('quota', function reconcileQuota(exchange) {
    return service.reconcile(exchange)
  })
  return new Elysia({ name: 'tollgate/quota', seed: { enabled, fallback, leaseTtlMs } })
    .decorate('quota', service)
    .onStop(function closeQuota() {
      return service.close()
    })
}
