/**
 * API keys at rest: how a key is minted, how it is hashed, and the table that holds the
 * hashes. The plaintext exists only in the answer to its creation; everything stored or
 * listed is derived from it one way, so a database dump grants no access.
 */
import { and, desc, eq, isNull, type SQL, sql } from 'drizzle-orm'
import type { Db } from '../../db/client'
import { apiKeys, type KeyOverrides } from '../../db/schema'

export const keyPrefix = 'tg-'
/** 32 random bytes: 256 bits, beyond any guessing, as base64url (43 characters). */
const keyBytes = 32
const keyPattern = /^tg-[A-Za-z0-9_-]{43}$/
/** How much of a key listings show: `tg-` plus 9 characters, too little to matter. */
const displayPrefixLength = 12

/** A stored key as the admin API shows it: never the hash, never the plaintext. */
export interface ApiKeyRecord {
  id: string
  userId: string
  name: string
  tier: string
  prefix: string
  createdAt: Date
  revokedAt: Date | null
  overrides: KeyOverrides
}

export interface NewApiKey {
  userId: string
  name: string
  tier: string
  /** @default {} */
  overrides?: KeyOverrides
}

export interface CreatedApiKey {
  record: ApiKeyRecord
  /** The plaintext key: shown once, to whoever created it. */
  key: string
}

export function generateKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(keyBytes))
  return keyPrefix + Buffer.from(bytes).toString('base64url')
}

/** Cheap shape check, so garbage never costs a hash, a cache slot or a query. */
export function looksLikeKey(candidate: string): boolean {
  return keyPattern.test(candidate)
}

/**
 * Hex SHA-256: keys carry 256 bits of entropy, so a fast unsalted hash is enough. It runs on
 * every authenticated request, so it is Bun's synchronous hasher, not a crypto.subtle round
 * through a promise.
 */
export function hashKey(key: string): string {
  return Bun.CryptoHasher.hash('sha256', key, 'hex')
}

const publicColumns = {
  id: apiKeys.id,
  userId: apiKeys.userId,
  name: apiKeys.name,
  tier: apiKeys.tier,
  prefix: apiKeys.prefix,
  createdAt: apiKeys.createdAt,
  revokedAt: apiKeys.revokedAt,
  overrides: apiKeys.overrides,
}

/** The api_keys table, over either driver. */
export class KeyStore {
  constructor(private readonly db: Db) {}

  async create({ userId, name, tier, overrides = {} }: NewApiKey): Promise<CreatedApiKey> {
    const key = generateKey()
    const keyHash = hashKey(key)
    const [record] = await this.db
      .insert(apiKeys)
      .values({ userId, name, tier, overrides, keyHash, prefix: key.slice(0, displayPrefixLength) })
      .returning(publicColumns)
    return { record: record!, key }
  }

  /** Newest first, optionally for one user. */
  list({ userId }: { userId?: string } = {}): Promise<ApiKeyRecord[]> {
    const where: SQL | undefined = userId === undefined ? undefined : eq(apiKeys.userId, userId)
    return this.db
      .select(publicColumns)
      .from(apiKeys)
      .where(where)
      .orderBy(desc(apiKeys.createdAt), apiKeys.id)
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    const [record] = await this.db.select(publicColumns).from(apiKeys).where(eq(apiKeys.id, id))
    return record ?? null
  }

  /**
   * Marks the key revoked and returns it with its hash (for cache invalidation), or null
   * when there is no such key. Revoking twice keeps the first revocation time.
   */
  async revoke(id: string): Promise<(ApiKeyRecord & { keyHash: string }) | null> {
    const [revoked] = await this.db
      .update(apiKeys)
      .set({ revokedAt: sql`coalesce(${apiKeys.revokedAt}, now())` })
      .where(eq(apiKeys.id, id))
      .returning({ ...publicColumns, keyHash: apiKeys.keyHash })
    return revoked ?? null
  }

  /** Whether any key was ever created (revoked ones count). */
  async hasAny(): Promise<boolean> {
    const rows = await this.db.select({ id: apiKeys.id }).from(apiKeys).limit(1)
    return rows.length > 0
  }

  /** The live (unrevoked) key with this hash, or null. */
  async findByHash(keyHash: string): Promise<ApiKeyRecord | null> {
    const [record] = await this.db
      .select(publicColumns)
      .from(apiKeys)
      .where(and(eq(apiKeys.keyHash, keyHash), isNull(apiKeys.revokedAt)))
    return record ?? null
  }
}
