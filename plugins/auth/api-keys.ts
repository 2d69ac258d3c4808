/**
 * The key service one app shares between its auth macro and its admin routes: the table
 * plus the lookup cache in front of it. Sharing it is what lets a revocation through the
 * admin API take effect on this instance at once rather than after the cache TTL.
 */
import type { Db } from '../../db/client'
import { ApiError, type Principal } from '../exchange'
import { KeyCache } from './key-cache'
import {
  type ApiKeyRecord,
  type CreatedApiKey,
  hashKey,
  KeyStore,
  looksLikeKey,
  type NewApiKey,
} from './keys'

export interface ApiKeysOptions {
  /** The database holding `api_keys` (either driver). */
  db: Db
  /**
   * How long a key lookup is served from memory, in ms; revocation takes effect on other
   * instances within this bound.
   * @default 5000
   */
  cacheTtlMs?: number
  /**
   * How long an unknown key is remembered, in ms (capped at `cacheTtlMs`).
   * @default 1000
   */
  negativeCacheTtlMs?: number
  /**
   * Cached lookups kept per kind (found, not found).
   * @default 10000
   */
  cacheMaxEntries?: number
  /**
   * Clock in epoch ms; tests inject one to step over the TTL.
   * @default Date.now
   */
  now?: () => number
  /**
   * Told about database failures while looking keys up (the client gets a 503).
   * @default console.error
   */
  onLookupError?: (error: unknown) => void
}

function principalOf(record: ApiKeyRecord): Principal {
  return { keyId: record.id, userId: record.userId, tier: record.tier, overrides: record.overrides }
}

export class ApiKeys {
  /** Identifies this service in plugin seeds, so two apps never share one by deduplication. */
  readonly id = crypto.randomUUID()
  readonly store: KeyStore
  private readonly cache: KeyCache<Principal>
  private readonly onLookupError: (error: unknown) => void

  constructor({
    db,
    cacheTtlMs = 5_000,
    negativeCacheTtlMs = 1_000,
    cacheMaxEntries = 10_000,
    now = Date.now,
    onLookupError = console.error,
  }: ApiKeysOptions) {
    const store = new KeyStore(db)
    this.store = store
    this.onLookupError = onLookupError
    this.cache = new KeyCache(
      async (hash) => {
        const record = await store.findByHash(hash)
        return record ? principalOf(record) : null
      },
      {
        ttlMs: cacheTtlMs,
        negativeTtlMs: negativeCacheTtlMs,
        maxEntries: cacheMaxEntries,
        now,
        onRefreshError: onLookupError,
      },
    )
  }

  /**
   * The principal a bearer token stands for, or null when it is not a live key. Throws a
   * 503 ApiError only when the key is not cached and the database cannot be asked.
   */
  async authenticate(token: string): Promise<Principal | null> {
    if (!looksLikeKey(token)) return null
    const hash = hashKey(token)
    try {
      return await this.cache.get(hash)
    } catch (error) {
      this.onLookupError(error)
      throw new ApiError({
        status: 503,
        message: 'The API key cannot be verified right now; retry shortly.',
        code: 'auth_unavailable',
        headers: { 'retry-after': '1' },
      })
    }
  }

  /**
   * The principal of a key this instance verified within the cache TTL, or null; never
   * asks the database. What a client may still use while its address is throttled.
   */
  async authenticateCached(token: string): Promise<Principal | null> {
    if (!looksLikeKey(token)) return null
    return this.cache.peek(hashKey(token))
  }

  create(input: NewApiKey): Promise<CreatedApiKey> {
    return this.store.create(input)
  }

  list(filter: { userId?: string } = {}): Promise<ApiKeyRecord[]> {
    return this.store.list(filter)
  }

  get(id: string): Promise<ApiKeyRecord | null> {
    return this.store.get(id)
  }

  /** Revokes the key everywhere within the cache TTL, and here immediately. */
  async revoke(id: string): Promise<ApiKeyRecord | null> {
    const revoked = await this.store.revoke(id)
    if (!revoked) return null
    this.cache.forget(revoked.keyHash)
    const { keyHash: _hash, ...record } = revoked
    return record
  }
}
