/**
 * The in-process key lookup cache that keeps the database off the hot path: a key seen in
 * the last few seconds authenticates with no query at all.
 *
 * The revocation bound: an entry is stamped with the time its database read *started* and
 * is never served after `stamp + ttlMs`. A key revoked at time r is therefore refused by
 * every instance from r + ttlMs on (plus at most one in-flight query's latency), and at
 * once by the instance that revoked it, which forgets the entry. Busy keys are re-read in
 * the background shortly before they expire, so they never wait on the database, without
 * ever stretching that bound.
 *
 * Unknown keys are cached too, for a shorter time, so a client retrying a bad key does not
 * turn each retry into a query; positive and negative entries live in separate bounded
 * maps, so a flood of random keys cannot evict the keys that are in use.
 */

/** Fraction of the TTL after which a served entry is refreshed in the background. */
const refreshAheadAt = 0.75

interface Entry<V> {
  value: V
  refreshAt: number
  expiresAt: number
}

export interface KeyCacheOptions {
  /**
   * How long a found key is served from memory, in ms: the revocation bound.
   * @default 5000
   */
  ttlMs?: number
  /**
   * How long "no such key" is remembered, in ms; capped at `ttlMs`. Short, because it
   * delays a key created on another instance.
   * @default 1000
   */
  negativeTtlMs?: number
  /**
   * Entries kept per kind (found, not found); the oldest written is dropped beyond it.
   * @default 10000
   */
  maxEntries?: number
  /**
   * Clock in epoch ms; tests inject one to step over the TTL.
   * @default Date.now
   */
  now?: () => number
  /**
   * Called when a background refresh fails; the entry then simply expires.
   * @default console.error
   */
  onRefreshError?: (error: unknown) => void
}

/** Lookups by key hash; `load` answers null for a key that does not exist or is revoked. */
export class KeyCache<V extends object> {
  private readonly found = new Map<string, Entry<V>>()
  private readonly missing = new Map<string, number>()
  private readonly inflight = new Map<string, Promise<V | null>>()
  /** Bumped by every `forget`, so a read that began before it cannot store what it read. */
  private epoch = 0
  private readonly ttlMs: number
  private readonly negativeTtlMs: number
  private readonly maxEntries: number
  private readonly now: () => number
  private readonly onRefreshError: (error: unknown) => void

  constructor(
    private readonly load: (hash: string) => Promise<V | null>,
    {
      ttlMs = 5_000,
      negativeTtlMs = 1_000,
      maxEntries = 10_000,
      now = Date.now,
      onRefreshError = console.error,
    }: KeyCacheOptions = {},
  ) {
    this.ttlMs = ttlMs
    this.negativeTtlMs = Math.min(negativeTtlMs, ttlMs)
    this.maxEntries = maxEntries
    this.now = now
    this.onRefreshError = onRefreshError
  }

  get size(): number {
    return this.found.size + this.missing.size
  }

  async get(hash: string): Promise<V | null> {
    const now = this.now()
    const entry = this.found.get(hash)
    if (entry && now < entry.expiresAt) {
      this.refreshIfDue(hash, entry, now)
      return entry.value
    }
    const missingUntil = this.missing.get(hash)
    if (missingUntil !== undefined && now < missingUntil) return null
    return this.inflight.get(hash) ?? this.fetch(hash)
  }

  /**
   * A found entry still within its TTL, never loading a missing one. A busy entry is still
   * refreshed ahead in the background, so a key in steady use stays cached.
   */
  peek(hash: string): V | null {
    const now = this.now()
    const entry = this.found.get(hash)
    if (!entry || now >= entry.expiresAt) return null
    this.refreshIfDue(hash, entry, now)
    return entry.value
  }

  /** Drops what is known about a key: after a revocation, or a creation it may have missed. */
  forget(hash: string): void {
    this.epoch++
    this.found.delete(hash)
    this.missing.delete(hash)
    this.inflight.delete(hash)
  }

  private refreshIfDue(hash: string, entry: Entry<V>, now: number): void {
    if (now >= entry.refreshAt && !this.inflight.has(hash)) this.fetch(hash).catch(this.onRefreshError)
  }

  /** One database read per key at a time; concurrent lookups share it. */
  private fetch(hash: string): Promise<V | null> {
    const stamp = this.now()
    const epoch = this.epoch
    const read = this.load(hash)
      .then((value) => {
        if (epoch === this.epoch) this.store(hash, value, stamp)
        return value
      })
      .finally(() => {
        if (this.inflight.get(hash) === read) this.inflight.delete(hash)
      })
    this.inflight.set(hash, read)
    return read
  }

  private store(hash: string, value: V | null, stamp: number): void {
    if (value === null) {
      this.found.delete(hash)
      insertBounded(this.missing, hash, stamp + this.negativeTtlMs, this.maxEntries)
    } else {
      this.missing.delete(hash)
      const entry = { value, refreshAt: stamp + this.ttlMs * refreshAheadAt, expiresAt: stamp + this.ttlMs }
      insertBounded(this.found, hash, entry, this.maxEntries)
    }
  }
}

/** Re-inserts at the end of the map's order and drops the oldest writes beyond `max`. */
function insertBounded<T>(map: Map<string, T>, key: string, value: T, max: number): void {
  map.delete(key)
  map.set(key, value)
  for (const oldest of map.keys()) {
    if (map.size <= max) break
    map.delete(oldest)
  }
}
