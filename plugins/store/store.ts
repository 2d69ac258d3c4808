/**
 * The shared-state seam. Plugins keep counters, leases, cache entries and breaker state
 * behind this interface so the same code runs on Redis (shared by every instance) and in
 * memory (the embedded default, and the fallback when Redis is unreachable).
 *
 * Atomic multi-key logic is a StoreScript: a Lua script for Redis and a JavaScript twin
 * for memory that implement the same algorithm. Keys of one script must share a hash tag
 * (`{u:alice}`) so the script runs on one Redis Cluster node.
 */
import { defineScript } from 'redis'
import type { MemoryData } from './memory-data'

export type ScriptArg = string | number
export type ScriptReply = string | number | null | ScriptReply[]

export interface StoreScript<R extends ScriptReply = ScriptReply> {
  readonly name: string
  readonly lua: string
  readonly sha1: string
  readonly numberOfKeys: number
  /** The in-memory twin; `nowMs` is the store's clock (Redis `TIME` for the Lua side). */
  runInMemory(data: MemoryData, keys: string[], args: string[], nowMs: number): R
}

export interface StoreScriptInit<R extends ScriptReply> {
  name: string
  lua: string
  numberOfKeys: number
  runInMemory(data: MemoryData, keys: string[], args: string[], nowMs: number): R
}

/** Defines a script once at module load; node-redis' defineScript computes its SHA1 for EVALSHA. */
export function defineStoreScript<R extends ScriptReply>(init: StoreScriptInit<R>): StoreScript<R> {
  const { SHA1 } = defineScript({
    SCRIPT: init.lua,
    NUMBER_OF_KEYS: init.numberOfKeys,
    parseCommand: () => undefined,
    transformReply: (reply: unknown) => reply,
  })
  return { ...init, sha1: SHA1 }
}

export interface Store {
  readonly kind: 'redis' | 'memory'
  /** True while commands can be expected to succeed (connected, or always for memory). */
  readonly available: boolean
  get(key: string): Promise<Uint8Array | null>
  /** Sets a value; `ttlMs` 0 means no expiry. */
  set(key: string, value: Uint8Array | string, ttlMs: number): Promise<void>
  del(...keys: string[]): Promise<number>
  incr(key: string): Promise<number>
  run<R extends ScriptReply>(script: StoreScript<R>, keys: string[], args: ScriptArg[]): Promise<R>
  /** Round-trip time in ms; throws when the store cannot answer. */
  ping(): Promise<number>
  close(): Promise<void>
}

/** Thrown when a command could not reach the store in time; callers degrade, never hang. */
export class StoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'StoreUnavailableError'
  }
}
