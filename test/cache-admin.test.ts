/**
 * Cache invalidation through the admin API, on the memory store and on Redis: per user (that
 * user's namespace only) and global (every namespace, shared ones included), each answering
 * what it invalidated; admin key required; described in the OpenAPI document.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createClient } from 'redis'
import { RedisStore } from '../plugins/store'
import { requirePostgres } from './support/db'
import { adminKey, eventually, type Gateway, startGateway } from './support/gateway'
import { requireRedis, testKeyPrefix } from './support/redis'

for (const backend of ['memory', 'redis'] as const) {
  describe(`cache invalidation on ${backend}`, () => {
    let gateway: Gateway
    const prefix = testKeyPrefix(`cache-admin-${crypto.randomUUID()}`)
    const keys: Record<string, string> = {}
    const users = {
      alice: `alice-${crypto.randomUUID().slice(0, 8)}`,
      bob: `bob-${crypto.randomUUID().slice(0, 8)}`,
    }

    beforeAll(async () => {
      gateway = await startGateway({
        env: { DATABASE_URL: await requirePostgres() },
        ...(backend === 'redis' ? { store: await connectedStore(prefix) } : {}),
        file: {
          models: {
            'team-1': { provider: 'sim', upstream_model: 'sim-1', pricing: { input: 1, output: 1 } },
          },
          cache: { models: { 'team-1': { namespace: 'shared' } } },
        },
      })
      keys.alice = await gateway.createKey(users.alice)
      keys.bob = await gateway.createKey(users.bob)
    }, 30_000)
    afterAll(async () => {
      await gateway?.stop()
      if (backend === 'redis') await deleteKeys(prefix)
    })

    const cacheOf = async (user: 'alice' | 'bob', model = 'sim-1') => {
      const response = await fetch(`${gateway.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${keys[user]}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model,
          temperature: 0,
          messages: [{ role: 'user', content: 'invalidate me' }],
        }),
      })
      await response.text()
      const id = response.headers.get('x-request-id')
      await eventually(() => gateway.settled.some((exchange) => exchange.id === id))
      return response.headers.get('x-cache')
    }
    const invalidate = (query = '', token = adminKey) =>
      fetch(`${gateway.url}/admin/cache${query}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${token}` },
      })

    test('per user, then everything', async () => {
      for (const user of ['alice', 'bob'] as const) {
        expect(await cacheOf(user)).toBe('MISS')
        expect(await cacheOf(user)).toBe('HIT')
      }
      expect(await cacheOf('alice', 'team-1')).toBe('MISS')
      expect(await cacheOf('bob', 'team-1')).toBe('HIT')

      const perUser = await invalidate(`?user=${users.alice}`)
      expect(perUser.status).toBe(200)
      expect(await perUser.json()).toEqual({
        scope: 'user',
        user_id: users.alice,
        namespace: `u:${users.alice}`,
        version: 1,
      })
      expect(await cacheOf('alice')).toBe('MISS')
      expect(await cacheOf('alice')).toBe('HIT')
      expect(await cacheOf('bob')).toBe('HIT')
      expect(await cacheOf('alice', 'team-1')).toBe('HIT')

      const all = await invalidate()
      expect(all.status).toBe(200)
      expect(await all.json()).toEqual({ scope: 'all', epoch: 1 })
      expect(await cacheOf('bob')).toBe('MISS')
      expect(await cacheOf('alice')).toBe('MISS')
      expect(await cacheOf('bob', 'team-1')).toBe('MISS')
      expect(await cacheOf('alice', 'team-1')).toBe('HIT')
    })

    test('needs the admin key and a well-formed user', async () => {
      const anonymous = await fetch(`${gateway.url}/admin/cache`, { method: 'DELETE' })
      expect(anonymous.status).toBe(401)
      expect((await invalidate('', keys.alice!)).status).toBe(401)
      const bad = await invalidate('?user=not%20valid')
      expect(bad.status).toBe(400)
      expect(bad.headers.get('content-type')).toContain('application/problem+json')
    })
  })
}

describe('cache admin in the OpenAPI document', () => {
  test('DELETE /admin/cache is described with its query, answers and tag', async () => {
    const gateway = await startGateway({ env: { DATABASE_URL: await requirePostgres() } })
    try {
      const doc = (await (await fetch(`${gateway.url}/swagger/json`)).json()) as {
        paths: Record<
          string,
          Record<
            string,
            { tags?: string[]; summary?: string; responses?: object; parameters?: Array<{ name: string }> }
          >
        >
      }
      const operation = doc.paths['/admin/cache']?.delete
      expect(operation?.tags).toEqual(['cache'])
      expect(operation?.summary).toBeTruthy()
      expect(Object.keys(operation?.responses ?? {})).toEqual(expect.arrayContaining(['200', '401', '503']))
      expect(operation?.parameters?.map((parameter) => parameter.name)).toContain('user')
    } finally {
      await gateway.stop()
    }
  })
})

/** Version counters never expire (entries do): a test removes the ones it created. */
async function deleteKeys(prefix: string): Promise<void> {
  const raw = createClient({ url: await requireRedis() })
  await raw.connect()
  try {
    for await (const batch of raw.scanIterator({ MATCH: `${prefix}*`, COUNT: 100 }))
      if (batch.length > 0) await raw.del(batch)
  } finally {
    raw.destroy()
  }
}

/** A Redis store under its own key prefix, connected before the gateway takes requests. */
async function connectedStore(prefix: string): Promise<RedisStore> {
  const store = new RedisStore({ url: await requireRedis(), keyPrefix: prefix })
  if (!(await store.waitUntilAvailable(5_000))) throw new Error('Redis did not answer')
  return store
}
