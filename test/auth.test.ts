/**
 * The auth plugin in a small app on real Postgres: user keys on a model route, the admin
 * key on the admin routes, the error envelopes, and revocation within the cache bound
 * (two app instances over one database, with an injected clock).
 */
import { afterAll, beforeAll, describe, expect, spyOn, test } from 'bun:test'
import nodeCrypto from 'node:crypto'
import { Elysia, t } from 'elysia'
import { openDatabase } from '../db/client'
import { ApiKeys, auth, authAdmin } from '../plugins/auth'
import { KeyCache } from '../plugins/auth/key-cache'
import { exchange, SettlementHub } from '../plugins/exchange'
import { openTestDatabase, type TestDatabase } from './support/db'

const ADMIN_KEY = 'admin-secret-for-tests-0123456789'
const TTL = 5_000
const tiers = ['free', 'pro']

let testDb: TestDatabase
let clock = 1_000_000
const now = () => clock

function buildApp(keys: ApiKeys, adminApiKey: string | null = ADMIN_KEY) {
  return new Elysia()
    .use(exchange({ hub: new SettlementHub() }))
    .use(auth({ keys, adminApiKey }))
    .post(
      '/v1/echo',
      ({ body, principal, exchange }) => ({
        ...principal,
        exchangeUser: exchange.principal?.userId,
        n: body.n,
      }),
      {
        apiKey: true,
        body: t.Object({ n: t.Number() }),
        response: { 200: t.Record(t.String(), t.Unknown()) },
      },
    )
    .get('/open', () => 'open', { response: { 200: t.String() } })
    .group('/admin', (admin) => admin.use(authAdmin({ keys, adminApiKey, tiers })))
}

type App = ReturnType<typeof buildApp>

/** As a real client sends it: with Content-Length, which the exchange's body reader keys on. */
function call(app: App, method: string, path: string, options: { token?: string; body?: unknown } = {}) {
  const headers: Record<string, string> = {}
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
  const body = options.body === undefined ? undefined : JSON.stringify(options.body)
  if (body !== undefined) {
    headers['content-type'] = 'application/json'
    headers['content-length'] = String(Buffer.byteLength(body))
  }
  return app.handle(new Request(`http://gateway${path}`, { method, headers, body }))
}

const echo = (app: App, token?: string, body: unknown = { n: 1 }) =>
  call(app, 'POST', '/v1/echo', { token, body })
const asAdmin = (method: string, path: string, body?: unknown) =>
  call(app, method, path, { token: ADMIN_KEY, body })
const authError = (message: string) => ({
  error: { message, type: 'authentication_error', param: null, code: 'invalid_api_key' },
})

async function createKey(userId = 'alice', tier = 'free') {
  const response = await asAdmin('POST', '/admin/keys', { user_id: userId, name: 'laptop', tier })
  expect(response.status).toBe(201)
  return (await response.json()) as { id: string; key: string; prefix: string }
}

let keys: ApiKeys
let app: App

beforeAll(async () => {
  testDb = await openTestDatabase('postgres')
  keys = new ApiKeys({ db: testDb.database.db, cacheTtlMs: TTL, now })
  app = buildApp(keys)
})
afterAll(() => testDb?.cleanup())

describe('user keys on model routes', () => {
  test('missing key: 401 with the OpenAI envelope and a Bearer challenge', async () => {
    const response = await echo(app)
    expect(response.status).toBe(401)
    expect(response.headers.get('www-authenticate')).toBe('Bearer')
    expect(await response.json()).toEqual(
      authError('Missing API key. Pass it as "Authorization: Bearer <key>".'),
    )
  })

  test('malformed, unknown and non-Bearer keys: 401 invalid_api_key', async () => {
    const unknown = `tg-${'A'.repeat(43)}`
    for (const token of ['nope', unknown, ADMIN_KEY]) {
      const response = await echo(app, token)
      expect(response.status).toBe(401)
      expect(await response.json()).toEqual(authError('Invalid API key.'))
    }
    const basic = new Request('http://gateway/v1/echo', {
      method: 'POST',
      headers: { authorization: 'Basic eDp5' },
    })
    expect((await app.handle(basic)).status).toBe(401)
  })

  test('a valid key reaches the handler with its principal, also on the Exchange', async () => {
    const created = await createKey('alice', 'pro')
    const response = await echo(app, created.key, { n: 7 })
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({
      keyId: created.id,
      userId: 'alice',
      tier: 'pro',
      overrides: {},
      exchangeUser: 'alice',
      n: 7,
    })
  })

  test('authentication runs before body validation: 401, not 400, without a key', async () => {
    expect((await echo(app, undefined, { n: 'not a number' })).status).toBe(401)
    const { key } = await createKey()
    expect((await echo(app, key, { n: 'not a number' })).status).toBe(400)
  })

  test('routes without the macro stay open', async () => {
    expect((await call(app, 'GET', '/open')).status).toBe(200)
  })

  test('a cached key authenticates with no database query', async () => {
    const { key } = await createKey()
    const lookups = spyOn(keys.store, 'findByHash')
    try {
      expect((await echo(app, key)).status).toBe(200)
      expect((await echo(app, key)).status).toBe(200)
      expect((await echo(app, key)).status).toBe(200)
      expect(lookups).toHaveBeenCalledTimes(1)
    } finally {
      lookups.mockRestore()
    }
  })

  test('revocation: at once where revoked, within the TTL on another instance', async () => {
    const other = new ApiKeys({ db: testDb.database.db, cacheTtlMs: TTL, now })
    const otherApp = buildApp(other)
    const { id, key } = await createKey()
    expect((await echo(app, key)).status).toBe(200)
    expect((await echo(otherApp, key)).status).toBe(200)
    const revokedAt = clock

    expect((await asAdmin('DELETE', `/admin/keys/${id}`)).status).toBe(200)
    expect((await echo(app, key)).status).toBe(401)

    clock = revokedAt + TTL - 1
    expect((await echo(otherApp, key)).status).toBe(200)
    clock = revokedAt + TTL
    expect((await echo(otherApp, key)).status).toBe(401)
  })

  test('the database down: an uncached key gets 503, a cached one still works', async () => {
    const doomed = await openDatabase(testDb.target)
    const failing = new ApiKeys({ db: doomed.db, cacheTtlMs: TTL, now, onLookupError: () => {} })
    const failingApp = buildApp(failing)
    const { key: cached } = await createKey()
    const { key: uncached } = await createKey()
    expect((await echo(failingApp, cached)).status).toBe(200)
    await doomed.close()
    expect((await echo(failingApp, cached)).status).toBe(200)
    const response = await echo(failingApp, uncached)
    expect(response.status).toBe(503)
    expect(response.headers.get('retry-after')).toBe('1')
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('auth_unavailable')
  })
})

describe('the lookup cache', () => {
  test('unknown keys are remembered for the shorter negative TTL', async () => {
    let loads = 0
    const unknown = async () => {
      loads++
      return null
    }
    const cache = new KeyCache<{ id: string }>(unknown, { ttlMs: TTL, negativeTtlMs: 1_000, now })
    expect(await cache.get('h')).toBeNull()
    expect(await cache.get('h')).toBeNull()
    expect(loads).toBe(1)
    clock += 1_000
    expect(await cache.get('h')).toBeNull()
    expect(loads).toBe(2)
  })

  test('concurrent misses share one load; busy keys refresh ahead without waiting', async () => {
    const loads: Array<(value: { id: string }) => void> = []
    const cache = new KeyCache<{ id: string }>(
      (hash) => new Promise((resolve) => loads.push(() => resolve({ id: hash }))),
      { ttlMs: TTL, now },
    )
    const first = Promise.all([cache.get('k'), cache.get('k'), cache.get('k')])
    expect(loads.length).toBe(1)
    loads[0]!({ id: 'k' })
    expect(await first).toEqual([{ id: 'k' }, { id: 'k' }, { id: 'k' }])
    clock += TTL * 0.8
    expect(await cache.get('k')).toEqual({ id: 'k' })
    expect(loads.length).toBe(2)
  })

  test('a read that began before forget() does not store what it read', async () => {
    let release: () => void = () => {}
    const cache = new KeyCache<{ id: string }>(
      () =>
        new Promise((resolve) => {
          release = () => resolve({ id: 'stale' })
        }),
      { ttlMs: TTL, now },
    )
    const pending = cache.get('k')
    cache.forget('k')
    release()
    await pending
    expect(cache.size).toBe(0)
  })

  test('bounded: found and not-found entries each keep at most maxEntries', async () => {
    const cache = new KeyCache<{ id: string }>(async (hash) => (hash.startsWith('y') ? { id: hash } : null), {
      maxEntries: 3,
      now,
    })
    for (let i = 0; i < 10; i++) await cache.get(`n${i}`)
    for (let i = 0; i < 10; i++) await cache.get(`y${i}`)
    expect(cache.size).toBe(6)
  })
})

describe('the admin key', () => {
  test('required: missing or wrong gives 401 problem+json; user keys never pass', async () => {
    const { key: userKey } = await createKey()
    for (const token of [undefined, 'wrong', `${ADMIN_KEY}x`, userKey]) {
      const response = await call(app, 'GET', '/admin/keys', { token })
      expect(response.status).toBe(401)
      expect(response.headers.get('content-type')).toBe('application/problem+json')
      expect(await response.json()).toMatchObject({
        status: 401,
        title: 'Unauthorized',
        code: 'invalid_api_key',
      })
    }
  })

  test('compared in constant time over equal-length digests', async () => {
    const compare = spyOn(nodeCrypto, 'timingSafeEqual')
    try {
      await call(app, 'GET', '/admin/keys', { token: 'short' })
      await call(app, 'GET', '/admin/keys', { token: ADMIN_KEY })
      expect(compare).toHaveBeenCalledTimes(2)
      for (const [a, b] of compare.mock.calls) {
        expect((a as Buffer).length).toBe(32)
        expect((b as Buffer).length).toBe(32)
      }
    } finally {
      compare.mockRestore()
    }
  })

  test('no admin key configured: every admin route answers 401', async () => {
    const closed = buildApp(keys, null)
    const response = await call(closed, 'GET', '/admin/keys', { token: ADMIN_KEY })
    expect(response.status).toBe(401)
    expect(await response.json()).toMatchObject({ code: 'admin_api_disabled' })
    const body = { user_id: 'x', name: 'y', tier: 'free' }
    expect((await call(closed, 'POST', '/admin/keys', { token: ADMIN_KEY, body })).status).toBe(401)
  })

  test('an admin key in the form of a user key is refused at construction', () => {
    expect(() => auth({ keys, adminApiKey: `tg-${'B'.repeat(43)}` })).toThrow(/must not have the form/)
  })
})

describe('admin key routes', () => {
  test('POST /keys answers 201 with the plaintext once', async () => {
    const response = await asAdmin('POST', '/admin/keys', { user_id: 'bob', name: 'ci', tier: 'free' })
    expect(response.status).toBe(201)
    const body = (await response.json()) as Record<string, unknown>
    expect(Object.keys(body).sort()).toEqual(['created_at', 'id', 'key', 'name', 'prefix', 'tier', 'user_id'])
    expect(body).toMatchObject({ user_id: 'bob', name: 'ci', tier: 'free' })
    expect(body.key).toMatch(/^tg-[A-Za-z0-9_-]{43}$/)
    expect(body.prefix).toBe((body.key as string).slice(0, 12))
    expect(new Date(body.created_at as string).toISOString()).toBe(body.created_at as string)
  })

  test('POST /keys: unknown tier is a 400 naming the tier; bad bodies are 400s', async () => {
    const response = await asAdmin('POST', '/admin/keys', { user_id: 'bob', name: 'ci', tier: 'platinum' })
    expect(response.status).toBe(400)
    expect(await response.json()).toMatchObject({ status: 400, param: 'tier', code: 'invalid_value' })
    const missing = await asAdmin('POST', '/admin/keys', { name: 'ci', tier: 'free' })
    expect(missing.status).toBe(400)
    expect(await missing.json()).toMatchObject({ param: 'user_id' })
    const unauthenticated = await call(app, 'POST', '/admin/keys', { body: { tier: 3 } })
    expect(unauthenticated.status).toBe(401)
  })

  test('GET /keys lists without hashes or plaintexts, filtered by user', async () => {
    const { key } = await createKey('listed-user')
    const response = await asAdmin('GET', '/admin/keys?user_id=listed-user')
    expect(response.status).toBe(200)
    const text = await response.text()
    expect(text).not.toContain(key)
    expect(text).not.toContain(new Bun.CryptoHasher('sha256').update(key).digest('hex'))
    const { data } = JSON.parse(text) as { data: Record<string, unknown>[] }
    expect(data.length).toBe(1)
    const fields = ['created_at', 'id', 'name', 'prefix', 'revoked_at', 'tier', 'user_id']
    expect(Object.keys(data[0]!).sort()).toEqual(fields)
    const all = await (await asAdmin('GET', '/admin/keys')).json()
    expect((all as { data: unknown[] }).data.length).toBeGreaterThan(1)
  })

  test('GET /keys/:id: 200, 404 unknown, 400 not a UUID', async () => {
    const { id } = await createKey('shown')
    const shown = await asAdmin('GET', `/admin/keys/${id}`)
    expect(shown.status).toBe(200)
    expect(await shown.json()).toMatchObject({ id, user_id: 'shown', revoked_at: null })
    const unknown = await asAdmin('GET', `/admin/keys/${crypto.randomUUID()}`)
    expect(unknown.status).toBe(404)
    expect(await unknown.json()).toMatchObject({ code: 'key_not_found' })
    const malformed = await asAdmin('GET', '/admin/keys/not-a-uuid')
    expect(malformed.status).toBe(400)
    expect(await malformed.json()).toMatchObject({ param: 'id' })
  })

  test('DELETE /keys/:id revokes and answers the revoked key; unknown is 404', async () => {
    const { id } = await createKey('revoked')
    const response = await asAdmin('DELETE', `/admin/keys/${id}`)
    expect(response.status).toBe(200)
    const body = (await response.json()) as { id: string; revoked_at: string | null }
    expect(body.id).toBe(id)
    expect(body.revoked_at).not.toBeNull()
    const unknown = await asAdmin('DELETE', `/admin/keys/${crypto.randomUUID()}`)
    expect(unknown.status).toBe(404)
  })
})
