/**
 * The keyspace of the in-memory store: values with optional expiry, lazily evicted on read
 * and swept periodically. Script twins read and write it directly, synchronously, which is
 * what makes them atomic in one process.
 */

interface Entry {
  value: unknown
  expiresAt: number
}

export class MemoryData {
  private readonly entries = new Map<string, Entry>()
  private readonly now: () => number

  constructor(now: () => number) {
    this.now = now
  }

  get<T>(key: string): T | undefined {
    return this.live(key)?.value as T | undefined
  }

  /** `ttlMs` 0 keeps the value until deleted. */
  set(key: string, value: unknown, ttlMs = 0): void {
    this.entries.set(key, { value, expiresAt: ttlMs > 0 ? this.now() + ttlMs : 0 })
  }

  /**
   * Replaces the value but keeps the current expiry, as Redis INCR/INCRBY/APPEND do; a key
   * that is absent (or expired) starts without one.
   */
  update(key: string, value: unknown): void {
    const entry = this.live(key)
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
    return this.live(key) !== undefined && this.entries.delete(key)
  }

  get size(): number {
    return this.entries.size
  }

  sweep(): void {
    const now = this.now()
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt !== 0 && entry.expiresAt <= now) this.entries.delete(key)
    }
  }

  private live(key: string): Entry | undefined {
    const entry = this.entries.get(key)
    if (!entry) return undefined
    if (entry.expiresAt !== 0 && entry.expiresAt <= this.now()) {
      this.entries.delete(key)
      return undefined
    }
    return entry
  }
}
