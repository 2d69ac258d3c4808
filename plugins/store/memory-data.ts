/**
 * The keyspace of the in-memory store: values with optional expiry, lazily evicted on read
 * and swept periodically. Script twins read and write it directly, synchronously, which is
 * what makes them atomic in one process.
 *
 * With a byte bound, byte-string values (cache entries) are also evicted least recently used
 * first once their total passes it. Counters and script state are never evicted: a quota
 * window or a cache namespace version that silently reset would change behaviour, not just
 * cost a miss (Redis gets the same guarantee from a `volatile-*` eviction policy, since only
 * entries carry a TTL).
 */

interface Entry {
  value: unknown
  expiresAt: number
}

// Map and entry bookkeeping per evictable value, so many tiny entries still count.
const entryOverheadBytes = 64

export class MemoryData {
  private readonly entries = new Map<string, Entry>()
  private readonly now: () => number
  private readonly maxBytes: number
  /** Evictable keys and their sizes, least recently used first (Map keeps insertion order). */
  private readonly lru = new Map<string, number>()
  private lruBytes = 0

  /** `maxBytes` 0 leaves byte values unbounded. */
  constructor(now: () => number, maxBytes = 0) {
    this.now = now
    this.maxBytes = maxBytes
  }

  get<T>(key: string): T | undefined {
    const entry = this.live(key)
    if (entry && this.maxBytes > 0) this.touch(key)
    return entry?.value as T | undefined
  }

  /** `ttlMs` 0 keeps the value until deleted. */
  set(key: string, value: unknown, ttlMs = 0): void {
    this.entries.set(key, { value, expiresAt: ttlMs > 0 ? this.now() + ttlMs : 0 })
    this.forget(key)
    if (this.maxBytes > 0 && value instanceof Uint8Array) {
      const size = key.length + value.byteLength + entryOverheadBytes
      this.lru.set(key, size)
      this.lruBytes += size
      this.evict()
    }
  }

  /**
   * Replaces the value but keeps the current expiry, as Redis INCR/INCRBY/APPEND do; a key
   * that is absent (or expired) starts without one.
   */
  update(key: string, value: unknown): void {
    const entry = this.live(key)
    this.forget(key)
    if (entry) entry.value = value
    else this.entries.set(key, { value, expiresAt: 0 })
  }

  /** Keeps the value and sets a new expiry (like PEXPIRE). */
  expire(key: string, ttlMs: number): void {
    const entry = this.live(key)
    if (entry) entry.expiresAt = this.now() + ttlMs
  }

  /** Milliseconds left before expiry, -1 without expiry, -2 when absent (like PTTL). */
  ttl(key: string): number {
    const entry = this.live(key)
    if (!entry) return -2
    return entry.expiresAt === 0 ? -1 : entry.expiresAt - this.now()
  }

  /** False for an absent or already expired key, so counts match Redis DEL. */
  delete(key: string): boolean {
    if (this.live(key) === undefined) return false
    this.remove(key)
    return true
  }

  get size(): number {
    return this.entries.size
  }

  /** Bytes held by evictable values (0 without a byte bound, when nothing is tracked). */
  get bytes(): number {
    return this.lruBytes
  }

  sweep(): void {
    const now = this.now()
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt !== 0 && entry.expiresAt <= now) this.remove(key)
    }
  }

  private live(key: string): Entry | undefined {
    const entry = this.entries.get(key)
    if (!entry) return undefined
    if (entry.expiresAt !== 0 && entry.expiresAt <= this.now()) {
      this.remove(key)
      return undefined
    }
    return entry
  }

  private remove(key: string): void {
    this.entries.delete(key)
    this.forget(key)
  }

  /** Drops a key from the eviction order (it was replaced, removed, or became a counter). */
  private forget(key: string): void {
    const size = this.lru.get(key)
    if (size === undefined) return
    this.lru.delete(key)
    this.lruBytes -= size
  }

  private touch(key: string): void {
    const size = this.lru.get(key)
    if (size === undefined) return
    this.lru.delete(key)
    this.lru.set(key, size)
  }

  private evict(): void {
    for (const [key] of this.lru) {
      if (this.lruBytes <= this.maxBytes) return
      this.remove(key)
    }
  }
}
