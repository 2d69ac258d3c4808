/**
 * Auth hardening on real Postgres: admin and user keys never stand in for each other,
 * nothing lists a hash or a plaintext, revocation reaches every instance within the cache
 * TTL, unknown and revoked keys take one path, and failed attempts are reported and
 * throttled per client address.
 */
import { afterAll, beforeAll, describe, expect, spyOn, test } from 'bun:test'
import { Elysia } from 'elysia'
import { ApiKeys, type AuthFailureReason, AuthFailures, auth, authAdmin } from '../plugins/auth'
import { addressKey } from '../plugins/auth/failures'
import { exchange, SettlementHub } from '../plugins/exchange'
import { buildConfig, ConfigError } from '../src/config'
import { openTestDatabase, type TestDatabase } from './support/db'

const ADMIN_KEY = 'hardening-admin-key-0123456789'
const TTL = 5_000
let clock = 5_000_000
const now = () => clock

let testDb: TestDatabase
let keys: ApiKeys

function buildApp(apiKeys: ApiKeys, failures = new AuthFailures({ now })) {
  return new Elysia()
    .use(exchange({ hub: new SettlementHub() }))
    .use(auth({ keys: apiKeys, adminApiKey: ADMIN_KEY, failures }))
    .get('/v1/whoami', ({ principal }) => ({ user: principal.userId }), { apiKey: true })
    .group('/admin', (admin) =>
      admin.use(authAdmin({ keys: apiKeys, adminApiKey: ADMIN_KEY, tiers: ['free'], failures })),
    )
}
type App = ReturnType<typeof buildApp>

function call(app: App, method: string, path: string, token?: string, body?: unknown) {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` }
  const text = body === undefined ? undefined : JSON.stringify(body)
  if (text !== undefined) headers['content-type'] = 'application/json'
  return app.handle(new Request(`http://gateway${path}`, { method, headers, body: text }))
}

let app: App
async function createKey(target: App = app, userId = 'hardening') {
  const response = await call(target, 'POST', '/admin/keys', ADMIN_KEY, {
    user_id: userId,
    name: 'k',
    tier: 'free',
  })
  expect(response.status).toBe(201)
  return (await response.json()) as { id: string; key: string }
}

beforeAll(async () => {
  testDb = await openTestDatabase('postgres')
  keys = new ApiKeys({ db: testDb.database.db, cacheTtlMs: TTL, now })
  app = buildApp(keys)
})
afterAll(() => testDb?.cleanup())

describe('admin and user keys are never confused', () => {
  test('an admin key with the user-key prefix stops startup and the plugin', () => {
    for (const adminKey of [`tg-${'A'.repeat(43)}`, 'tg-short-but-sixteen-chars']) {
      expect(() => buildConfig({ ADMIN_API_KEY: adminKey })).toThrow(ConfigError)
      expect(() => buildConfig({ ADMIN_API_KEY: adminKey })).toThrow(/must not start with "tg-"/)
      expect(() => auth({ keys, adminApiKey: adminKey })).toThrow(/must not have the form of a user key/)
    }
  })

  test('the admin key on a model route is refused without a hash or a query; a user key on admin routes too', async () => {
    const lookups = spyOn(keys.store, 'findByHash')
    try {
      const response = await call(app, 'GET', '/v1/whoami', ADMIN_KEY)
      expect(response.status).toBe(401)
      expect(lookups).not.toHaveBeenCalled()
    } finally {
      lookups.mockRestore()
    }
    const { key } = await createKey()
    expect((await call(app, 'GET', '/v1/whoami', key)).status).toBe(200)
    for (const [method, path] of [
      ['GET', '/admin/keys'],
      ['POST', '/admin/keys'],
    ]) {
      const response = await call(app, method!, path!, key, { user_id: 'x', name: 'y', tier: 'free' })
      expect(response.status).toBe(401)
      expect(await response.json()).toMatchObject({ code: 'invalid_api_key' })
    }
  })
})

describe('no answer shows a hash or a plaintext', () => {
  test('list, show and revoke answer neither; only creation shows the plaintext, once', async () => {
    const { id, key } = await createKey(app, 'no-leak')
    const hash = new Bun.CryptoHasher('sha256').update(key).digest('hex')
    const answers = [
      await call(app, 'GET', '/admin/keys'),
      await call(app, 'GET', '/admin/keys', ADMIN_KEY),
      await call(app, 'GET', '/admin/keys?user_id=no-leak', ADMIN_KEY),
      await call(app, 'GET', `/admin/keys/${id}`, ADMIN_KEY),
      await call(app, 'DELETE', `/admin/keys/${id}`, ADMIN_KEY),
      await call(app, 'DELETE', `/admin/keys/${id}`, ADMIN_KEY),
    ]
    for (const response of answers) {
      const text = await response.text()
      expect(text).not.toContain(key)
      expect(text).not.toContain(key.slice(12))
      expect(text.toLowerCase()).not.toContain(hash)
      expect(text).not.toMatch(/key_hash|keyHash/)
    }
  })
})

describe('revocation', () => {
  test('every instance refuses a busy revoked key from revocation + TTL on, refresh-ahead included', async () => {
    const instances = [
      keys,
      ...[1, 2].map(() => new ApiKeys({ db: testDb.database.db, cacheTtlMs: TTL, now })),
    ]
    const apps = instances.map((instance) => buildApp(instance))
    const { id, key } = await createKey()
    // Busy on every instance: used every second, so entries are refreshed ahead of expiry.
    for (let second = 0; second < 4; second++) {
      for (const each of apps) expect((await call(each, 'GET', '/v1/whoami', key)).status).toBe(200)
      await Bun.sleep(10)
      clock += 1_000
    }
    const revokedAt = clock
    expect((await call(apps[1]!, 'DELETE', `/admin/keys/${id}`, ADMIN_KEY)).status).toBe(200)
    expect((await call(apps[1]!, 'GET', '/v1/whoami', key)).status).toBe(401)
    while (clock < revokedAt + TTL) {
      for (const each of apps) await call(each, 'GET', '/v1/whoami', key)
      await Bun.sleep(10)
      clock += 500
    }
    clock = revokedAt + TTL
    for (const each of apps) expect((await call(each, 'GET', '/v1/whoami', key)).status).toBe(401)
  })

  test('unknown and revoked keys take one path: one query for live keys, one failure, one negative entry', async () => {
    const reasons: AuthFailureReason[] = []
    const instance = new ApiKeys({ db: testDb.database.db, cacheTtlMs: TTL, now })
    const target = buildApp(
      instance,
      new AuthFailures({ now, onAuthFailure: (reason) => reasons.push(reason) }),
    )
    const { id, key: revoked } = await createKey(target)
    expect((await call(target, 'DELETE', `/admin/keys/${id}`, ADMIN_KEY)).status).toBe(200)
    const unknown = `tg-${'Q'.repeat(43)}`
    const lookups = spyOn(instance.store, 'findByHash')
    try {
      const answers = []
      for (const token of [unknown, revoked]) {
        lookups.mockClear()
        const first = await call(target, 'GET', '/v1/whoami', token)
        const second = await call(target, 'GET', '/v1/whoami', token)
        expect(lookups).toHaveBeenCalledTimes(1)
        expect(lookups.mock.calls[0]![0]).toMatch(/^[0-9a-f]{64}$/)
        expect(await lookups.mock.results[0]!.value).toBeNull()
        answers.push({
          status: [first.status, second.status],
          challenge: first.headers.get('www-authenticate'),
          body: [await first.text(), await second.text()],
        })
      }
      expect(answers[0]).toEqual(answers[1]!)
      expect(reasons.slice(-4)).toEqual(['invalid_key', 'invalid_key', 'invalid_key', 'invalid_key'])
    } finally {
      lookups.mockRestore()
    }
  })
})

describe('failed attempts', () => {
  let server: ReturnType<App['listen']>
  let url: string
  const reasons: AuthFailureReason[] = []
  const failures = new AuthFailures({
    perMinute: 5,
    trustedProxyHops: 1,
    now,
    onAuthFailure: (r) => reasons.push(r),
  })

  beforeAll(() => {
    server = buildApp(keys, failures).listen({ port: 0, hostname: '127.0.0.1' })
    url = `http://127.0.0.1:${server.server!.port}`
  })
  afterAll(() => server?.stop(true))

  const from = (address: string, path: string, token?: string) =>
    fetch(`${url}${path}`, {
      headers: {
        'x-forwarded-for': `198.51.100.1, ${address}`,
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      },
    })

  test('each failure is reported with its reason; unknown and revoked are both invalid_key', async () => {
    reasons.length = 0
    await from('192.0.2.1', '/v1/whoami')
    await from('192.0.2.1', '/v1/whoami', 'nope')
    await from('192.0.2.1', '/admin/keys')
    await from('192.0.2.1', '/admin/keys', 'wrong-admin-key')
    expect(reasons).toEqual(['missing_key', 'invalid_key', 'missing_admin_key', 'invalid_admin_key'])
  })

  test('past the limit an address gets 429 with Retry-After; others and recently verified keys carry on', async () => {
    const { key: verified } = await createKey()
    expect((await from('203.0.113.7', '/v1/whoami', verified)).status).toBe(200)
    for (let attempt = 0; attempt < 10; attempt++) await from('203.0.113.7', '/v1/whoami')
    for (let attempt = 0; attempt < 5; attempt++)
      expect((await from('203.0.113.7', '/v1/whoami', `tg-${'Z'.repeat(43)}`)).status).toBe(401)

    const refused = await from('203.0.113.7', '/v1/whoami', `tg-${'Y'.repeat(43)}`)
    expect(refused.status).toBe(429)
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(Number(refused.headers.get('retry-after'))).toBeLessThanOrEqual(60)
    expect(await refused.json()).toMatchObject({
      error: { type: 'rate_limit_error', code: 'too_many_auth_failures' },
    })
    const admin = await from('203.0.113.7', '/admin/keys', ADMIN_KEY)
    expect(admin.status).toBe(429)
    expect(admin.headers.get('content-type')).toContain('application/problem+json')

    // In steady use it stays cached (refreshed ahead in the background) past the cache TTL.
    for (let second = 0; second < 8; second++) {
      clock += 1_000
      expect((await from('203.0.113.7', '/v1/whoami', verified)).status).toBe(200)
      await Bun.sleep(10)
    }
    const { key: fresh } = await createKey()
    expect((await from('203.0.113.7', '/v1/whoami', fresh)).status).toBe(429)
    expect((await from('203.0.113.8', '/v1/whoami', fresh)).status).toBe(200)
    expect(reasons).toContain('throttled')

    clock += 60_000
    expect((await from('203.0.113.7', '/admin/keys', ADMIN_KEY)).status).toBe(200)
  })

  test('X-Forwarded-For counts only as far as proxies are trusted', async () => {
    const untrusting = buildApp(keys, new AuthFailures({ perMinute: 2, now })).listen({
      port: 0,
      hostname: '127.0.0.1',
    })
    try {
      const target = `http://127.0.0.1:${untrusting.server!.port}/v1/whoami`
      const statuses = []
      for (let attempt = 0; attempt < 4; attempt++) {
        const response = await fetch(target, {
          headers: { authorization: 'Bearer wrong', 'x-forwarded-for': `192.0.2.${attempt}` },
        })
        statuses.push(response.status)
      }
      expect(statuses).toEqual([401, 401, 429, 429])
    } finally {
      untrusting.stop(true)
    }
  })

  test('IPv6 counts per /64; IPv4-mapped addresses as IPv4; the table is bounded', () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe(addressKey('2001:db8:1:2:bbbb:cccc:dddd:9'))
    expect(addressKey('2001:db8:1:2::1')).not.toBe(addressKey('2001:db8:1:3::1'))
    expect(addressKey('2001:0db8:0001:0002:0:0:0:1')).toBe(addressKey('2001:db8:1:2::1'))
    expect(addressKey('::ffff:10.0.0.1')).toBe('10.0.0.1')
    expect(addressKey('x'.repeat(1000)).length).toBeLessThanOrEqual(64)
    const bounded = new AuthFailures({ maxAddresses: 3, now })
    for (let host = 0; host < 10; host++) bounded.fail('invalid_key', `192.0.2.${host}`)
    expect(bounded.size).toBe(3)
  })
})
