/**
 * The route-level switches `apiKey: true` and `admin: true`. A route opts in; everything
 * else (health, metrics, docs) stays open without a list of exceptions to maintain.
 */
import { Elysia } from 'elysia'
import { Exchange, type Principal } from '../exchange'
import type { ApiKeys } from './api-keys'
import { adminGuard, bearerToken, invalidApiKey, missingApiKey } from './credentials'

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
}

export function auth({ keys, adminApiKey = null }: AuthOptions) {
  /** Handed from the transform hook that authenticates to the resolve that exposes it. */
  const principals = new WeakMap<Request, Principal>()
  const requireAdminKey = adminGuard(adminApiKey)

  /**
   * Runs as a `transform` hook: Elysia runs transform after parsing the body and before
   * validating it, so a caller without a valid key learns only that (401), never what
   * was wrong with its body (400). `resolve` would run after validation.
   */
  async function authenticateApiKey(context: { request: Request }) {
    const token = bearerToken(context.request)
    if (token === null) throw missingApiKey()
    const principal = await keys.authenticate(token)
    if (principal === null) throw invalidApiKey()
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
  function authenticateAdmin({ request }: { request: Request }) {
    requireAdminKey(request)
  }

  return new Elysia({ name: 'tollgate/auth', seed: { keys: keys.id, admin: adminApiKey !== null } }).macro({
    apiKey: { transform: authenticateApiKey, resolve: exposePrincipal },
    admin: { transform: authenticateAdmin },
  })
}
