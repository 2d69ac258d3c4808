/** What the response and embedding caches share: the store, the rules, the clock, the counters. */
import type { Exchange } from '../exchange'
import { type Store, StoreUnavailableError } from '../store'
import type { CacheDirectives, CacheRule, Policies } from './policy'
import type { CacheCounters } from './stats'

export interface CacheContext {
  store: Store
  policies: Policies
  counters: CacheCounters
  /** Epoch milliseconds: when entries were stored, and how old they are. */
  now: () => number
  enabled: boolean
  maxEntryBytes: number
  /** How long past its TTL an entry is kept for `lookupStale`. */
  staleMs: number
  onError: (error: unknown) => void
}

/** The note key on the Exchange under which a cache keeps what it must do at settlement. */
export const noteName = 'cache'

/**
 * Absorbs a failure: the request goes on without the cache. An unavailable store is expected
 * (it shows as BYPASS, and the store reports its own state); anything else is reported.
 */
export function absorb(context: CacheContext, error: unknown): void {
  if (!(error instanceof StoreUnavailableError)) context.onError(error)
}

/** Whole seconds since an entry was stored, for the `Age` header. */
export function ageSeconds(storedAt: number, now: number): number {
  return Math.max(0, Math.floor((now - storedAt) / 1000))
}

export function maxAgeMs(directives: CacheDirectives): number | null {
  return directives.maxAgeSeconds === null ? null : directives.maxAgeSeconds * 1000
}

/** Whether a lookup goes to the store at all; the reasons it does not are all a bypass. */
export function usable(
  context: CacheContext,
  rule: CacheRule,
  directives: CacheDirectives,
  exchange: Exchange,
) {
  return (
    context.enabled &&
    rule.mode !== 'never' &&
    !directives.noStore &&
    exchange.principal !== null &&
    context.store.available
  )
}
