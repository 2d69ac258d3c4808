/**
 * Response and embedding caching: exact-match answers served without an upstream call,
 * never across tenants, never for requests the client or the config did not allow, and
 * invalidatable in O(1). The routes call the service (`lookup` next to the quota
 * reservation, `claim` after it, `record`/`collector` on a miss); entries are written when
 * the Exchange settles. The plugin knows the OpenAI wire format, not the providers.
 */
import { Elysia } from 'elysia'
import type { SettlementHub } from '../exchange'
import type { Store } from '../store'
import { type CacheRule, withOverrides } from './policy'
import { CacheService } from './service'

export { cacheAdmin } from './admin-routes'
export type { EmbeddingBatch, EmbeddingInput } from './embedding-cache'
export type { CacheDirectives, CacheMode, CacheRule } from './policy'
export { isDeterministic, parseCacheControl } from './policy'
export { replayFrames } from './replay'
export type { CachedAnswer, CacheHit, ResponseLookup } from './response-cache'
export type { UserInvalidation } from './service'
export { CacheService } from './service'
export type { CacheKind, CacheStats, LookupResult } from './stats'
export type { ChatRequestLike, Chunk, Completion } from './wire'

export interface CacheOptions {
  /** Where entries live: Redis (shared by every instance), or memory (an own, byte-bounded store). */
  store: Store
  /** The settlement hub; writing entries subscribes to its `cache` phase. */
  hub: SettlementHub
  /**
   * Off: every model request is a BYPASS.
   * @default true
   */
  enabled?: boolean
  /**
   * The rule of chat models without one of their own.
   * @default { mode: 'deterministic', ttlMs: 3600000, namespace: 'user' }
   */
  responses?: Partial<CacheRule>
  /**
   * The rule of embedding models without one of their own (embeddings are deterministic).
   * @default { mode: 'always', ttlMs: 604800000, namespace: 'user' }
   */
  embeddings?: Partial<CacheRule>
  /**
   * Per-model overrides of the rule of the model's kind, by model name.
   * @default {}
   */
  models?: Record<string, Partial<CacheRule>>
  /**
   * Entries larger than this (the stored bytes of one answer or one vector) are not stored.
   * @default 1048576
   */
  maxEntryBytes?: number
  /**
   * Bound of the in-memory store's entries, least recently used evicted first.
   * @default 268435456
   */
  memoryMaxBytes?: number
  /**
   * How long past its TTL an entry is kept for `responses.lookupStale` (an answer when the
   * upstream cannot give one); ordinary lookups never serve it.
   * @default 3600000
   */
  staleMs?: number
  /**
   * Whether concurrent identical cacheable misses in this instance share one upstream call.
   * @default true
   */
  coalesce?: boolean
  /**
   * Clock in epoch ms: when entries are stored and how old they are; tests inject one.
   * @default Date.now
   */
  now?: () => number
  /**
   * Called with unexpected errors the cache absorbed (the request went on without it), for
   * logs; an unavailable store is not one (it shows as BYPASS).
   * @default () => {}
   */
  onError?: (error: unknown) => void
}

export function cache({
  store,
  hub,
  enabled = true,
  responses = {},
  embeddings = {},
  models = {},
  maxEntryBytes = 1_048_576,
  memoryMaxBytes = 268_435_456,
  staleMs = 3_600_000,
  coalesce = true,
  now = Date.now,
  onError = () => {},
}: CacheOptions) {
  const service = new CacheService({
    store,
    enabled,
    responses: withOverrides({ mode: 'deterministic', ttlMs: 3_600_000, namespace: 'user' }, responses),
    embeddings: withOverrides({ mode: 'always', ttlMs: 604_800_000, namespace: 'user' }, embeddings),
    models,
    maxEntryBytes,
    memoryMaxBytes,
    staleMs,
    coalesce,
    now,
    onError,
  })
  hub.subscribe('cache', function storeAnswers(exchange) {
    return service.settle(exchange)
  })
  return new Elysia({ name: 'tollgate/cache', seed: service.id })
    .decorate('cache', service)
    .onStop(function closeCache() {
      return service.close()
    })
}
