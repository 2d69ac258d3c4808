/** In-process store: the embedded default, and the model for the Redis store's behaviour. */
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
}

export class MemoryStore implements Store {
  readonly kind = 'memory' as const
  readonly available = true
  readonly data: MemoryData
  private readonly now: () => number
  private readonly sweeper: ReturnType<typeof setInterval> | undefined

  constructor({ now = Date.now, sweepIntervalMs = 30_000 }: MemoryStoreOptions = {}) {
    this.now = now
    this.data = new MemoryData(now)
    if (sweepIntervalMs > 0) {
      this.sweeper = setInterval(() => this.data.sweep(), sweepIntervalMs)
      this.sweeper.unref()
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    const value = this.data.get<Uint8Array | string>(key)
    if (value === undefined) return null
    return typeof value === 'string' ? new TextEncoder().encode(value) : value
  }

  async set(key: string, value: Uint8Array | string, ttlMs: number): Promise<void> {
    this.data.set(key, value, ttlMs)
  }

  async del(...keys: string[]): Promise<number> {
    let removed = 0
    for (const key of keys) if (this.data.delete(key)) removed++
    return removed
  }

  async incr(key: string): Promise<number> {
    const next = Number(this.data.get<number | string>(key) ?? 0) + 1
    this.data.set(key, next)
    return next
  }

  async run<R extends ScriptReply>(script: StoreScript<R>, keys: string[], args: ScriptArg[]): Promise<R> {
    return script.runInMemory(this.data, keys, args.map(String), this.now())
  }

  async ping(): Promise<number> {
    return 0
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper)
  }
}
