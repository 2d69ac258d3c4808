/**
 * The key service one app shares between its auth macro and its admin routes: the table
 * plus the lookup cache in front of it. Sharing it is what lets a revocation through the
 * admin API take effect on this instance at once rather than after the cache TTL.
 */
import type { Db } from '../../db/client'
import { ApiError, type Principal } from '../exchange'
import { KeyCache, LookupUnavailableError } from './key-cache'
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
   * Longest a request waits for the database to look its key up, in ms. Past it the
   * database counts as unreachable: the key's last known entry answers (see
   * `staleWhileUnavailableMs`), or the request gets 503 `auth_unavailable`.
   * @default 1000
   */
  lookupTimeoutMs?: number
  /**
   * While the database is unreachable, how long past its expiry a key's last known lookup
   * (found, or unknown/revoked) still answers, in ms. Fail static: requests keep flowing
   * through an outage, at the price that a revocation made meanwhile cannot be read until
   * the database answers again. 0 disables: an expired key gets 503 during an outage.
   * @default 300000
   */
  staleWhileUnavailableMs?: number
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
   * Told about database failures while looking keys up: once per failed or timed-out
   * read, not per request it affected.
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

  constructor({
    db,
    cacheTtlMs = 5_000,
    negativeCacheTtlMs = 1_000,
    lookupTimeoutMs = 1_000,
    staleWhileUnavailableMs = 300_000,
    cacheMaxEntries = 10_000,
    now = Date.now,
    onLookupError = console.error,
  }: ApiKeysOptions) {
    const store = new KeyStore(db)
    this.store = store
    this.cache = new KeyCache(
      async (hash) => {
        const record = await store.findByHash(hash)
        return record ? principalOf(record) : null
      },
      {
        ttlMs: cacheTtlMs,
        negativeTtlMs: negativeCacheTtlMs,
        lookupTimeoutMs,
        staleMs: staleWhileUnavailableMs,
        maxEntries: cacheMaxEntries,
        now,
        onError: onLookupError,
      },
    )
  }

  /**
   * The principal a bearer token stands for, or null when it is not a live key. Throws a
   * 503 ApiError, within the lookup timeout, only when the database cannot be asked and
   * nothing recent enough is known about the key.
   */
  async authenticate(token: string): Promise<Principal | null> {
    if (!looksLikeKey(token)) return null
    const hash = hashKey(token)
    try {
      return await this.cache.get(hash)
    } catch (error) {
      if (!(error instanceof LookupUnavailableError)) throw error
      throw new ApiError({
        status: 503,
        message: 'The API key cannot be verified right now; retry shortly.',
        code: 'auth_unavailable',
        headers: { 'retry-after': String(Math.max(1, Math.ceil(error.retryAfterMs / 1000))) },
      })
    }
  }

  /**
   * The principal of a key this instance verified within the cache TTL (or its stale
   * period, while the database is unreachable), or null; never asks the database. What a
   * client may still use while its address is throttled.
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

  /**
   * Revokes the key here immediately, and on every other instance within the cache TTL
   * once it can read the database (see `staleWhileUnavailableMs`).
   */
  async revoke(id: string): Promise<ApiKeyRecord | null> {
    const revoked = await this.store.revoke(id)
    if (!revoked) return null
    this.cache.forget(revoked.keyHash)
    const { keyHash: _hash, ...record } = revoked
    return record
  }
}
