/**
 * The route-level switches `apiKey: true` and `admin: true`. A route opts in; everything
 * else (health, metrics, docs) stays open without a list of exceptions to maintain. Every
 * refusal is reported to the AuthFailures, which also throttles addresses that guess.
 */
import { Elysia } from 'elysia'
import { Exchange, type Principal } from '../exchange'
import type { ApiKeys } from './api-keys'
import { adminGuard, adminRefusal, bearerToken, invalidApiKey, missingApiKey } from './credentials'
import { AuthFailures, type PeerSource, throttled } from './failures'

export interface AuthOptions {
  /**
   * The key service. Pass the same instance to `auth` and `authAdmin`, so a revocation
   * through the admin API clears this instance's lookup cache at once.
   */
  keys: ApiKeys
  /**
   * The bearer token the admin routes require; null disables the admin API (every admin
   * route answers 401). It must not have the form of a user key.
   * @default null
   */
  adminApiKey?: string | null
  /**
   * Counts failed authentications and throttles addresses that guess. Pass the same
   * instance to `auth` and `authAdmin`, so failures on /v1 and /admin count together.
   * @default new AuthFailures()
   */
  failures?: AuthFailures
}

/** The part of Elysia's context the transform hooks read. */
interface AuthContext {
  request: Request
  server: PeerSource | null
}

const adminReasons = {
  missing: 'missing_admin_key',
  invalid: 'invalid_admin_key',
  disabled: 'admin_disabled',
} as const

export function auth({ keys, adminApiKey = null, failures = new AuthFailures() }: AuthOptions) {
  /** Handed from the transform hook that authenticates to the resolve that exposes it. */
  const principals = new WeakMap<Request, Principal>()
  const checkAdminKey = adminGuard(adminApiKey)

  /**
   * Unknown and revoked keys take the same path (hash, cache, the same query for a live
   * key, a negative cache entry) and the same failure. While the address is throttled,
   * only keys this instance verified recently pass: guesses are not checked at all.
   */
  async function principalFor({ request, server }: AuthContext): Promise<Principal> {
    const token = bearerToken(request)
    // The address is looked up only when it can matter: some address is being counted, or a guess fails.
    const address = failures.counting ? failures.addressOf(request, server) : null
    const wait = failures.blockedFor(address)
    if (wait > 0) {
      const cached = token === null ? null : await keys.authenticateCached(token)
      if (cached !== null) return cached
      failures.fail('throttled', address)
      throw throttled(wait)
    }
    if (token === null) {
      failures.fail('missing_key', address)
      throw missingApiKey()
    }
    const principal = await keys.authenticate(token)
    if (principal === null) {
      failures.fail('invalid_key', address ?? failures.addressOf(request, server))
      throw invalidApiKey()
    }
    return principal
  }

  /**
   * Runs as a `transform` hook: Elysia runs transform after parsing the body and before
   * validating it, so a caller without a valid key learns only that (401), never what
   * was wrong with its body (400). `resolve` would run after validation.
   */
  async function authenticateApiKey(context: AuthContext) {
    const principal = await principalFor(context)
    principals.set(context.request, principal)
    // The exchange plugin derives the Exchange earlier in the same stage; later plugins
    // (quota, ledger) read the principal from it.
    const { exchange } = context as { exchange?: unknown }
    if (exchange instanceof Exchange) exchange.principal = principal
  }

  function exposePrincipal({ request }: { request: Request }) {
    const principal = principals.get(request)
    if (principal === undefined) throw invalidApiKey()
    return { principal }
  }

  /** A transform hook too, for the same reason: 401 before any 400. */
  function authenticateAdmin({ request, server }: AuthContext) {
    const address = failures.addressOf(request, server)
    const wait = failures.blockedFor(address)
    if (wait > 0) {
      failures.fail('throttled', address)
      throw throttled(wait)
    }
    const verdict = checkAdminKey(request)
    if (verdict === 'ok') return
    failures.fail(adminReasons[verdict], address)
    throw adminRefusal(verdict)
  }

  return new Elysia({ name: 'tollgate/auth', seed: { keys: keys.id, admin: adminApiKey !== null } }).macro({
    apiKey: { transform: authenticateApiKey, resolve: exposePrincipal },
    admin: { transform: authenticateAdmin },
  })
}
