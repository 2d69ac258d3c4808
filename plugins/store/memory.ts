/**
 * In-process store: the embedded default, and the model for the Redis store's behaviour.
 * Where Redis has a rule callers can observe (INCR keeps the expiry, SET replaces it, values
 * are byte strings, INCR refuses a non-integer), this store follows it, so code that passes
 * on memory does not change behaviour on Redis.
 */
import { MemoryData } from './memory-data'
import type { ScriptArg, ScriptReply, Store, StoreScript } from './store'

export interface MemoryStoreOptions {
  /**
   * Clock in epoch milliseconds; tests inject one to drive windows and expiries.
   * @default Date.now
   */
  now?: () => number
  /**
   * How often expired entries are swept, in ms (0 disables the sweeper).
   * @default 30000
   */
  sweepIntervalMs?: number
  /**
   * Bound on the bytes of byte-string values (cache entries), evicted least recently used
   * first past it; counters and script state are never evicted. 0 leaves them unbounded.
   * @default 0
   */
  maxBytes?: number
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

export class MemoryStore implements Store {
  readonly kind = 'memory' as const
  readonly available = true
  readonly data: MemoryData
  private readonly now: () => number
  private readonly sweeper: ReturnType<typeof setInterval> | undefined

  constructor({ now = Date.now, sweepIntervalMs = 30_000, maxBytes = 0 }: MemoryStoreOptions = {}) {
    this.now = now
    this.data = new MemoryData(now, maxBytes)
    if (sweepIntervalMs > 0) {
      this.sweeper = setInterval(() => this.data.sweep(), sweepIntervalMs)
      this.sweeper.unref()
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    const value = this.data.get<unknown>(key)
    if (value === undefined) return null
    // Counters are kept as numbers for the script twins; Redis would hand back their digits.
    if (typeof value === 'string' || typeof value === 'number') return encoder.encode(String(value))
    // A copy, so a caller mutating the answer cannot change the stored value.
    if (value instanceof Uint8Array) return value.slice()
    throw new Error('WRONGTYPE Operation against a key holding the wrong kind of value')
  }

  async set(key: string, value: Uint8Array | string, ttlMs: number): Promise<void> {
    this.data.set(key, typeof value === 'string' ? value : value.slice(), ttlMs)
  }

  async del(...keys: string[]): Promise<number> {
    let removed = 0
    for (const key of keys) if (this.data.delete(key)) removed++
    return removed
  }

  async incr(key: string): Promise<number> {
    const next = toInteger(this.data.get<unknown>(key) ?? 0) + 1
    // INCR keeps an existing expiry: a windowed counter must not become immortal.
    this.data.update(key, next)
    return next
  }

  async run<R extends ScriptReply>(script: StoreScript<R>, keys: string[], args: ScriptArg[]): Promise<R> {
    if (keys.length !== script.numberOfKeys) {
      throw new TypeError(`script ${script.name} takes ${script.numberOfKeys} keys, got ${keys.length}`)
    }
    return script.runInMemory(this.data, keys, args.map(String), this.now())
  }

  async ping(): Promise<number> {
    return 0
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper)
  }
}

/** Reads a stored value as Redis INCR does: decimal digits of a 64-bit signed integer, or an error. */
function toInteger(value: unknown): number {
  const text = value instanceof Uint8Array ? decoder.decode(value) : String(value)
  if (/^-?\d{1,19}$/.test(text)) {
    const parsed = Number(text)
    if (Number.isSafeInteger(parsed)) return parsed
  }
  throw new Error('ERR value is not an integer or out of range')
}
