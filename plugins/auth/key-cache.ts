/**
 * The in-process key lookup cache that keeps the database off the hot path: a key seen in
 * the last few seconds authenticates with no query at all.
 *
 * The revocation bound: an entry is stamped with the time its database read *started* and
 * is never served after `stamp + ttlMs` while the database answers. A key revoked at time r
 * is therefore refused by every instance from r + ttlMs on (plus at most one lookup's
 * latency), and at once by the instance that revoked it, which forgets the entry. Busy keys
 * are re-read in the background shortly before they expire, so they never wait on the
 * database, without ever stretching that bound.
 *
 * Unknown keys are cached too, for a shorter time, so a client retrying a bad key does not
 * turn each retry into a query; positive and negative entries live in separate bounded
 * maps, so a flood of random keys cannot evict the keys that are in use.
 *
 * When the database is unreachable (a read failed, or gave no answer within
 * `lookupTimeoutMs`), the cache fails static: a key's last known answer, found or not, is
 * served for up to `staleMs` past its expiry instead of failing every request. A revocation
 * cannot be read from a database that does not answer, so during an outage a revoked key
 * may keep working for that long; once the database answers again the usual bound holds.
 * After a failure no read is sent for `failureBackoffMs`, and never more than one per key,
 * so a dead database does not collect a queue of queries; a key with nothing to fall back
 * on is refused at once with `LookupUnavailableError`.
 */

/** Fraction of the TTL after which a served entry is refreshed in the background. */
const refreshAheadAt = 0.75

interface Entry<V> {
  value: V
  refreshAt: number
  expiresAt: number
}

/** The database could not be asked and nothing known about the key may stand in for it. */
export class LookupUnavailableError extends Error {
  constructor(
    /** When asking the database is worth trying again, in ms from now. */
    readonly retryAfterMs: number,
    options?: ErrorOptions,
  ) {
    super('key lookup unavailable: the database does not answer', options)
  }
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
   * Longest a lookup waits for the database, in ms; past it the database counts as
   * unreachable for this lookup (the read itself runs on, and may still fill the cache).
   * @default 1000
   */
  lookupTimeoutMs?: number
  /**
   * How long past its expiry an entry may still answer while the database is unreachable,
   * in ms. 0 disables: every expired key waits for the database.
   * @default 300000
   */
  staleMs?: number
  /**
   * After a failed or timed-out read, how long no new read is sent, in ms: lookups answer
   * from stale entries or fail at once meanwhile.
   * @default 1000
   */
  failureBackoffMs?: number
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
   * Told of every database read that fails, and of every wait for one that runs out of
   * time: once each, however many lookups shared it.
   * @default console.error
   */
  onError?: (error: unknown) => void
}

/** Lookups by key hash; `load` answers null for a key that does not exist or is revoked. */
export class KeyCache<V extends object> {
  private readonly found = new Map<string, Entry<V>>()
  private readonly missing = new Map<string, number>()
  /** The one database read per key; it stays here until it settles, however long that takes. */
  private readonly reads = new Map<string, Promise<V | null>>()
  /** Lookups waiting on a key's read, sharing one deadline. */
  private readonly waits = new Map<string, Promise<V | null>>()
  /** Bumped by every `forget`, so a read that began before it cannot store what it read. */
  private epoch = 0
  /** Until when no read is sent, after one failed (epoch ms). */
  private unavailableUntil = 0
  private readonly ttlMs: number
  private readonly negativeTtlMs: number
  private readonly lookupTimeoutMs: number
  private readonly staleMs: number
  private readonly failureBackoffMs: number
  private readonly maxEntries: number
  private readonly now: () => number
  private readonly onError: (error: unknown) => void

  constructor(
    private readonly load: (hash: string) => Promise<V | null>,
    {
      ttlMs = 5_000,
      negativeTtlMs = 1_000,
      lookupTimeoutMs = 1_000,
      staleMs = 300_000,
      failureBackoffMs = 1_000,
      maxEntries = 10_000,
      now = Date.now,
      onError = console.error,
    }: KeyCacheOptions = {},
  ) {
    this.ttlMs = ttlMs
    this.negativeTtlMs = Math.min(negativeTtlMs, ttlMs)
    this.lookupTimeoutMs = lookupTimeoutMs
    this.staleMs = staleMs
    this.failureBackoffMs = failureBackoffMs
    this.maxEntries = maxEntries
    this.now = now
    this.onError = onError
  }

  get size(): number {
    return this.found.size + this.missing.size
  }

  /**
   * The key's value, null when it does not exist. Rejects with LookupUnavailableError,
   * within `lookupTimeoutMs`, only when the database cannot answer and no entry may stand in.
   */
  async get(hash: string): Promise<V | null> {
    const now = this.now()
    const entry = this.found.get(hash)
    if (entry && now < entry.expiresAt) {
      this.refreshIfDue(hash, entry, now)
      return entry.value
    }
    const missingUntil = this.missing.get(hash)
    if (missingUntil !== undefined && now < missingUntil) return null
    if (now < this.unavailableUntil) return this.fallback(hash)
    try {
      return await this.wait(hash)
    } catch (error) {
      return this.fallback(hash, error)
    }
  }

  /**
   * A found entry still within its TTL (or, while the database is unreachable, within its
   * stale period), never loading a missing one. A busy entry is still refreshed ahead in
   * the background, so a key in steady use stays cached.
   */
  peek(hash: string): V | null {
    const now = this.now()
    const entry = this.found.get(hash)
    if (!entry) return null
    if (now < entry.expiresAt) {
      this.refreshIfDue(hash, entry, now)
      return entry.value
    }
    return now < this.unavailableUntil && now < entry.expiresAt + this.staleMs ? entry.value : null
  }

  /** Drops what is known about a key: after a revocation, or a creation it may have missed. */
  forget(hash: string): void {
    this.epoch++
    this.found.delete(hash)
    this.missing.delete(hash)
    this.reads.delete(hash)
    this.waits.delete(hash)
  }

  private refreshIfDue(hash: string, entry: Entry<V>, now: number): void {
    if (now >= entry.refreshAt && now >= this.unavailableUntil && !this.waits.has(hash))
      this.wait(hash).catch(() => {})
  }

  /** The last known answer, if it is recent enough to stand in for the database. */
  private fallback(hash: string, error?: unknown): V | null {
    const now = this.now()
    const entry = this.found.get(hash)
    if (entry && now < entry.expiresAt + this.staleMs) return entry.value
    const missingUntil = this.missing.get(hash)
    if (missingUntil !== undefined && now < missingUntil + this.staleMs) return null
    const retryAfterMs = Math.max(this.unavailableUntil - now, 0)
    throw new LookupUnavailableError(retryAfterMs, error === undefined ? undefined : { cause: error })
  }

  /**
   * Waits up to the lookup timeout for the key's read, starting one unless one is still
   * running (say, stuck on a dead connection: then it is waited for again, not doubled).
   * Concurrent lookups share the wait; running out of time counts as a failure.
   */
  private wait(hash: string): Promise<V | null> {
    const current = this.waits.get(hash)
    if (current) return current
    const read = this.reads.get(hash) ?? this.read(hash)
    let timer: ReturnType<typeof setTimeout> | undefined
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new Error(`key lookup: no answer from the database within ${this.lookupTimeoutMs} ms`)
        this.failed(error)
        reject(error)
      }, this.lookupTimeoutMs)
    })
    const wait = Promise.race([read, expired]).finally(() => {
      clearTimeout(timer)
      if (this.waits.get(hash) === wait) this.waits.delete(hash)
    })
    this.waits.set(hash, wait)
    return wait
  }

  private read(hash: string): Promise<V | null> {
    const stamp = this.now()
    const epoch = this.epoch
    const read = this.load(hash).then(
      (value) => {
        this.unavailableUntil = 0
        if (epoch === this.epoch) this.store(hash, value, stamp)
        return value
      },
      (error: unknown) => {
        this.failed(error)
        throw error
      },
    )
    this.reads.set(hash, read)
    // Settles the bookkeeping even when every waiter has given up on this read.
    read
      .catch(() => {})
      .finally(() => {
        if (this.reads.get(hash) === read) this.reads.delete(hash)
      })
    return read
  }

  private failed(error: unknown): void {
    this.unavailableUntil = Math.max(this.unavailableUntil, this.now() + this.failureBackoffMs)
    this.onError(error)
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
