/**
 * Counters of what the cache did, for the metrics exporter to read (`CacheService.stats()`):
 * lookups by cache and result, what was stored, what was refused as too large, and the cost
 * that answers from the cache saved. Plain numbers, so reading them costs nothing.
 */

export type CacheKind = 'response' | 'embedding'

/**
 * `hit`: a fresh entry answered; `miss`: upstream answered (and the answer is stored);
 * `bypass`: the cache was not used (not cacheable, `no-store`, disabled, store unavailable);
 * `coalesced`: a concurrent identical request's answer was shared; `stale`: an entry past its
 * TTL answered through `lookupStale`. Embedding lookups count per input.
 */
export type LookupResult = 'hit' | 'miss' | 'bypass' | 'coalesced' | 'stale'

export interface CacheStats {
  lookups: Record<CacheKind, Record<LookupResult, number>>
  /** Entries written and their bytes (header included), since start. */
  stored: Record<CacheKind, { entries: number; bytes: number }>
  /** Answers not stored because they were larger than `maxEntryBytes`. */
  oversize: number
  /** What the answers served from the cache would have cost upstream, in nano-USD. */
  savedNanoUsd: bigint
  /** Coalesced upstream calls in progress now. */
  inFlight: number
}

const results: LookupResult[] = ['hit', 'miss', 'bypass', 'coalesced', 'stale']
const zeroLookups = () =>
  Object.fromEntries(results.map((result) => [result, 0])) as Record<LookupResult, number>

export class CacheCounters {
  private readonly lookups: Record<CacheKind, Record<LookupResult, number>> = {
    response: zeroLookups(),
    embedding: zeroLookups(),
  }
  private readonly stored = { response: { entries: 0, bytes: 0 }, embedding: { entries: 0, bytes: 0 } }
  private oversize = 0
  private savedNanoUsd = 0n

  lookup(kind: CacheKind, result: LookupResult, count = 1): void {
    this.lookups[kind][result] += count
  }

  wrote(kind: CacheKind, bytes: number): void {
    this.stored[kind].entries++
    this.stored[kind].bytes += bytes
  }

  tooLarge(): void {
    this.oversize++
  }

  saved(nanoUsd: bigint): void {
    this.savedNanoUsd += nanoUsd
  }

  snapshot(inFlight: number): CacheStats {
    return {
      lookups: { response: { ...this.lookups.response }, embedding: { ...this.lookups.embedding } },
      stored: { response: { ...this.stored.response }, embedding: { ...this.stored.embedding } },
      oversize: this.oversize,
      savedNanoUsd: this.savedNanoUsd,
      inFlight,
    }
  }
}
