/**
 * Who is calling: user API keys on model routes (`apiKey: true`), the admin key on admin
 * routes (`admin: true`), and the admin routes that manage keys. The only door into
 * plugins/auth.
 */
import type { Db } from '../../db/client'
import type { CreatedApiKey, NewApiKey } from './keys'
import { KeyStore } from './keys'

export type { AuthAdminOptions } from './admin-routes'
export { authAdmin } from './admin-routes'
export type { ApiKeysOptions } from './api-keys'
export { ApiKeys } from './api-keys'
export type { AuthFailureReason, AuthFailuresOptions } from './failures'
export { AuthFailures } from './failures'
export type { ApiKeyRecord, CreatedApiKey, NewApiKey } from './keys'
export { hashKey, KeyStore, looksLikeKey } from './keys'
export type { AuthOptions } from './macros'
export { auth } from './macros'

/** Creates a key outside any request, e.g. from a script or a seed; the plaintext is in the result only. */
export function createApiKey(db: Db, key: NewApiKey): Promise<CreatedApiKey> {
  return new KeyStore(db).create(key)
}

/**
 * First start in development: when no key was ever created, creates one for user `dev`
 * and returns its plaintext (to print once); otherwise returns null, so restarts print nothing.
 */
export async function createDevelopmentKey(db: Db, tier = 'free'): Promise<string | null> {
  const store = new KeyStore(db)
  if (await store.hasAny()) return null
  const { key } = await store.create({ userId: 'dev', name: 'development', tier })
  return key
}
