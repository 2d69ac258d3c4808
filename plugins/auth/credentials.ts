/**
 * Reading and judging the credentials a request carries. User keys and the admin key are
 * checked by separate functions over separate sources (the key table, the configured
 * admin key), so neither can ever stand in for the other.
 */
import nodeCrypto from 'node:crypto'
import { ApiError } from '../exchange'
import { keyPrefix } from './keys'

const bearerPattern = /^Bearer[ \t]+(\S+)[ \t]*$/i
/** RFC 6750: a 401 names the scheme the client should use. */
const challenge = { 'www-authenticate': 'Bearer' }

/** The token of an `Authorization: Bearer <token>` header, or null when there is none. */
export function bearerToken(request: Request): string | null {
  const header = request.headers.get('authorization')
  return header ? (bearerPattern.exec(header)?.[1] ?? null) : null
}

export function missingApiKey(): ApiError {
  return new ApiError({
    status: 401,
    message: 'Missing API key. Pass it as "Authorization: Bearer <key>".',
    code: 'invalid_api_key',
    headers: challenge,
  })
}

export function invalidApiKey(): ApiError {
  return new ApiError({
    status: 401,
    message: 'Invalid API key.',
    code: 'invalid_api_key',
    headers: challenge,
  })
}

function sha256(value: string): Buffer {
  return nodeCrypto.createHash('sha256').update(value).digest()
}

/** What an admin check found: the key, no key, a wrong key, or no admin API at all. */
export type AdminVerdict = 'ok' | 'missing' | 'invalid' | 'disabled'

/**
 * A check of the admin bearer token, or a check that always answers `disabled` when no
 * admin key is configured. Both sides are SHA-256 digests compared with `timingSafeEqual`:
 * equal lengths whatever the input, so neither the key's content nor its length leaks
 * through response timing. An admin key starting with the user-key prefix is refused here,
 * so no token can ever be taken for both.
 */
export function adminGuard(adminApiKey: string | null): (request: Request) => AdminVerdict {
  if (adminApiKey === null) return () => 'disabled'
  if (adminApiKey.startsWith(keyPrefix))
    throw new Error(`auth: the admin API key must not have the form of a user key (${keyPrefix}...)`)
  const expected = sha256(adminApiKey)
  return function checkAdminKey(request) {
    const token = bearerToken(request)
    if (token === null) return 'missing'
    return nodeCrypto.timingSafeEqual(sha256(token), expected) ? 'ok' : 'invalid'
  }
}

/** The 401 for an admin check that did not find the key. */
export function adminRefusal(verdict: Exclude<AdminVerdict, 'ok'>): ApiError {
  const message = {
    disabled: 'The admin API is disabled: no admin API key is configured.',
    missing: 'Missing admin API key. Pass it as "Authorization: Bearer <admin key>".',
    invalid: 'Invalid admin API key.',
  }[verdict]
  const code = verdict === 'disabled' ? 'admin_api_disabled' : 'invalid_api_key'
  return new ApiError({ status: 401, message, code, headers: challenge })
}
