/**
 * The cache as the routes and the admin API see it: the response and embedding caches over
 * one store, invalidation, settlement, and the counters for metrics.
 *
 * Invalidation is O(1): it bumps a counter (a user's namespace version, or the global epoch)
 * that every entry records at write time and every lookup reads alongside the entry; old
 * entries stop matching at once and age out by their TTL.
 */
import type { Exchange } from '../exchange'
import { MemoryStore, type Store } from '../store'
import type { CacheContext } from './context'
import { EmbeddingCache } from './embedding-cache'
import { epochKey, userNamespace, versionKey } from './key'
import { type CacheRule, Policies } from './policy'
import { ResponseCache } from './response-cache'
import { CacheCounters, type CacheStats } from './stats'

export interface CacheServiceOptions {
  store: Store
  enabled: boolean
  responses: CacheRule
  embeddings: CacheRule
  models: Record<string, Partial<CacheRule>>
  maxEntryBytes: number
  memoryMaxBytes: number
  staleMs: number
  coalesce: boolean
  now: () => number
  onError: (error: unknown) => void
}

export interface UserInvalidation {
  userId: string
  namespace: string
  /** The namespace's new version; entries stored under an older one no longer match. */
  version: number
}

export class CacheService {
  /** Distinguishes instances, so two apps in one process never share a deduplicated plugin. */
  readonly id = crypto.randomUUID()
  readonly responses: ResponseCache
  readonly embeddings: EmbeddingCache
  private readonly context: CacheContext
  private readonly ownStore: MemoryStore | null

  constructor(options: CacheServiceOptions) {
    // In memory, entries get a store of their own, bounded by bytes: evicting them can then
    // never touch the quota state that shares the application's store.
    this.ownStore =
      options.store.kind === 'memory'
        ? new MemoryStore({ now: options.now, maxBytes: options.memoryMaxBytes })
        : null
    this.context = {
      store: this.ownStore ?? options.store,
      policies: new Policies({ response: options.responses, embedding: options.embeddings }, options.models),
      counters: new CacheCounters(),
      now: options.now,
      enabled: options.enabled,
      maxEntryBytes: options.maxEntryBytes,
      staleMs: options.staleMs,
      onError: options.onError,
    }
    this.responses = new ResponseCache(this.context, options.coalesce)
    this.embeddings = new EmbeddingCache(this.context)
  }

  stats(): CacheStats {
    return this.context.counters.snapshot(this.responses.inFlight)
  }

  /** Makes every entry of the user's namespace unreachable (shared namespaces are untouched). */
  async invalidateUser(userId: string): Promise<UserInvalidation> {
    const namespace = userNamespace(userId)
    return { userId, namespace, version: await this.context.store.incr(versionKey(namespace)) }
  }

  /** Makes every entry unreachable, in every namespace; returns the new epoch. */
  invalidateAll(): Promise<number> {
    return this.context.store.incr(epochKey)
  }

  /** The hub's cache phase: records what hits saved, writes what misses produced. */
  async settle(exchange: Exchange): Promise<void> {
    this.context.counters.saved(exchange.savedNanoUsd)
    await this.responses.settle(exchange)
    await this.embeddings.settle(exchange)
  }

  async close(): Promise<void> {
    await this.ownStore?.close()
  }
}
