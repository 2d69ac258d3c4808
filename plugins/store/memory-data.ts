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
    const entry = this.entries.get(key)
    if (!entry) return undefined
    if (entry.expiresAt !== 0 && entry.expiresAt <= this.now()) {
      this.entries.delete(key)
      return undefined
    }
    return entry.value as T
  }

  /** `ttlMs` 0 keeps the value until deleted. */
  set(key: string, value: unknown, ttlMs = 0): void {
    this.entries.set(key, { value, expiresAt: ttlMs > 0 ? this.now() + ttlMs : 0 })
  }

  /** Keeps the value and sets a new expiry (like PEXPIRE). */
  expire(key: string, ttlMs: number): void {
    const entry = this.entries.get(key)
    if (entry) entry.expiresAt = this.now() + ttlMs
  }

  delete(key: string): boolean {
    return this.entries.delete(key)
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
}
