/**
 * Redis goes away under a caching gateway (its own redis-server, killed or hung): chat and
 * embedding requests still succeed, marked BYPASS, without waiting on a dead socket (a hung
 * one costs at most the store's command timeout); invalidation answers 503; readiness
 * reports degraded; and the cache comes back with Redis.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { RedisStore } from '../plugins/store'
import { requirePostgres } from './support/db'
import { adminKey, eventually, type Gateway, startGateway } from './support/gateway'
import { type RedisServer, startRedisServer, testKeyPrefix } from './support/redis'

let redis: RedisServer
let store: RedisStore
let gateway: Gateway
let key: string

beforeAll(async () => {
  redis = await startRedisServer()
  store = new RedisStore({ url: redis.url, keyPrefix: testKeyPrefix('cache-down') })
  expect(await store.waitUntilAvailable(2_000)).toBe(true)
  gateway = await startGateway({ store, env: { DATABASE_URL: await requirePostgres() } })
  key = await gateway.createKey()
}, 30_000)
afterAll(async () => {
  await gateway?.stop()
  await redis?.kill()
})

async function post(path: string, body: Record<string, unknown>) {
  const started = performance.now()
  const response = await fetch(`${gateway.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  const text = await response.text()
  const id = response.headers.get('x-request-id')
  await eventually(() => gateway.settled.some((exchange) => exchange.id === id))
  return {
    status: response.status,
    cache: response.headers.get('x-cache'),
    text,
    ms: performance.now() - started,
  }
}

const chat = (stream = false) =>
  post('/v1/chat/completions', {
    model: 'sim-1',
    temperature: 0,
    stream,
    messages: [{ role: 'user', content: 'still there?' }],
  })
const embed = () => post('/v1/embeddings', { model: 'sim-embed-1', input: ['one', 'two'] })

describe('cache with Redis killed', () => {
  test('cached before; BYPASS without errors or waiting while down; back after a restart', async () => {
    expect((await chat()).cache).toBe('MISS')
    expect((await chat()).cache).toBe('HIT')
    expect((await embed()).cache).toBe('MISS')

    await redis.kill()
    for (const request of [chat, () => chat(true), embed, chat]) {
      const answer = await request()
      expect(answer.status).toBe(200)
      expect(answer.cache).toBe('BYPASS')
      // Well under the store's command timeout: a dead socket fails at once, nothing waits on it.
      expect(answer.ms).toBeLessThan(250)
    }
    expect((await chat(true)).text.trimEnd().endsWith('data: [DONE]')).toBe(true)
    const invalidation = await fetch(`${gateway.url}/admin/cache`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${adminKey}` },
    })
    expect(invalidation.status).toBe(503)
    const ready = (await (await fetch(`${gateway.url}/health/ready`)).json()) as {
      status: string
      components: Record<string, { status: string }>
    }
    expect(ready.status).toBe('degraded')
    expect(ready.components.redis?.status).toBe('degraded')

    await redis.restart()
    expect(await store.waitUntilAvailable(5_000)).toBe(true)
    expect((await chat()).cache).toBe('MISS')
    expect((await chat()).cache).toBe('HIT')
  })

  test('hung (the socket open, nothing answering): BYPASS within the command timeout', async () => {
    expect((await chat()).cache).toBe('HIT')
    redis.pause()
    try {
      const answer = await chat()
      expect(answer).toMatchObject({ status: 200, cache: 'BYPASS' })
      expect(answer.ms).toBeLessThan(1_000)
      expect((await embed()).status).toBe(200)
    } finally {
      redis.resume()
    }
    expect(await store.waitUntilAvailable(5_000)).toBe(true)
  })
})
