/**
 * What the other plugins hand the metrics, by shape (feature plugins meet through callbacks
 * and plain values, never imports), and the helpers that turn it into series: running totals
 * become counter increments, and a dependency check gets a deadline.
 */

/** A dependency whose reachability and round trip `/metrics` reports (Redis, the database). */
export interface DependencyProbe {
  /** Label value: `redis`, `database`. */
  name: string
  /** Resolves when the dependency answers; rejects (or outlives the timeout) when it is down. */
  ping(): Promise<unknown>
}

/** What a quota admission decided (the quota plugin's QuotaDecision). */
export interface QuotaDecisionLike {
  limit: string
  outcome: string
}

/** The breaker plugin's events, by shape: feature plugins meet through callbacks, not imports. */
export type BreakerEventLike =
  | { type: 'transition'; target: string; from: string; to: string }
  | { type: 'rejected'; target: string }
  | { type: 'retry'; target: string }
  | { type: 'timeout'; target: string; kind: string }
  | { type: 'fallback'; servedBy: string }
  | { type: 'stale'; model: string }

/** The cache plugin's running totals (CacheService.stats()), by shape. */
export interface CacheTotals {
  lookups: Record<string, Record<string, number>>
  stored: Record<string, { entries: number; bytes: number }>
  oversize: number
}

/** The cost ledger's running totals (Ledger.stats()), by shape. */
export interface LedgerTotals {
  backlog: number
  written: number
  flushFailures: number
  dropped: number
}

/** Turns running totals into counter increments: each scrape adds what is new since the last. */
export class Totals {
  private readonly last = new Map<string, number>()

  delta(key: string, total: number): number {
    const previous = this.last.get(key) ?? 0
    this.last.set(key, total)
    // A total that went down belongs to a restarted source: all of it is new.
    return total >= previous ? total - previous : total
  }
}

/** Settles with `work`, or rejects once `ms` have passed; never leaves its timer behind. */
export async function within(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)
  })
  try {
    await Promise.race([work, expired])
  } finally {
    clearTimeout(timer)
  }
}
