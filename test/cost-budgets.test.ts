/**
 * Monthly budgets, per user and per key: set through the admin API, enforced by the quota
 * reservation so concurrent requests on one or two instances never overshoot them (Redis and
 * the in-memory store alike), started from the ledger's month-to-date spend when a budget
 * arrives mid-month, and shown in /v1/usage. The month itself: cost-budget-month.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createStore, MemoryStore, type Store } from '../plugins/store'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { type CostGateway, startCostGateway } from './support/cost'
import { freshPostgresDatabase, type ThrowawayPostgres } from './support/db'
import { chat, noLimits, storeReady, uniqueUser } from './support/quota'
import { requireRedis, testKeyPrefix } from './support/redis'

/** Output at $1,000 per 1M tokens and free input: `max_tokens: 2` reserves exactly $0.002. */
const gatewayFile = (simUrl: string, extra: Record<string, unknown> = {}) => ({
  providers: { upstream: { type: 'openai', base_url: simUrl } },
  models: { remote: { provider: 'upstream', pricing: { input: 0, output: 1000 } } },
  tiers: { open: noLimits },
  global: { concurrent: null },
  ledger: { budget_refresh_ms: 100, flush_interval_ms: 50 },
  ...extra,
})

const twoCents = (i: number) => ({ model: 'remote', max_tokens: 2, content: `budget ${i}` })

async function putBudget(gateway: CostGateway, path: string, usd: string | null) {
  const response = await gateway.admin(path, {
    method: 'PUT',
    body: JSON.stringify({ monthly_budget_usd: usd }),
  })
  expect(response.status).toBe(200)
  return (await response.json()) as Record<string, unknown>
}

describe('monthly budgets under concurrency', () => {
  let sim: SimServer
  let database: ThrowawayPostgres

  beforeAll(async () => {
    // Slow answers, so that all 20 requests are in flight together.
    sim = await startSimServer({ port: 0, ttftMs: 300 })
    database = await freshPostgresDatabase()
  })
  afterAll(async () => {
    await sim?.stop()
    await database?.drop()
  })

  const stores: Array<[string, () => Promise<Store>]> = [
    ['memory', async () => new MemoryStore()],
    [
      'redis',
      async () => {
        const store = createStore({
          url: await requireRedis(),
          keyPrefix: testKeyPrefix(`budgets-${uniqueUser('r')}`),
        })
        await storeReady(store)
        return store
      },
    ],
  ]
  for (const [name, makeStore] of stores) {
    for (const scope of ['user', 'key'] as const) {
      test(`${name}: a $0.01 ${scope} budget admits 5 of 20 concurrent $0.002 requests, never more`, async () => {
        const gateway = await startCostGateway({
          env: { DATABASE_URL: database.url },
          file: gatewayFile(sim.url),
          store: await makeStore(),
        })
        try {
          const user = uniqueUser(`budget-${scope}`)
          const { id, key } = await gateway.createKey(user, 'open')
          await putBudget(gateway, scope === 'user' ? `/users/${user}/budget` : `/keys/${id}/budget`, '0.01')
          const results = await Promise.all(
            Array.from({ length: 20 }, async (_, i) => {
              const response = await chat(gateway.url, key, twoCents(i))
              return {
                status: response.status,
                body: (await response.json()) as { error?: { code: string; message: string } },
              }
            }),
          )
          const admitted = results.filter((r) => r.status === 200)
          const denied = results.filter((r) => r.status === 429)
          expect(admitted).toHaveLength(5)
          expect(denied).toHaveLength(15)
          expect(denied[0]!.body.error!.code).toBe('insufficient_quota')
          expect(denied[0]!.body.error!.message).toContain('Monthly budget exceeded: $0.010000 per month')
          await gateway.ledger.close()
          const spent = await gateway.ledger.budgets.userSpent(
            [user],
            `${new Date().toISOString().slice(0, 7)}-01`,
          )
          expect(spent.get(user)).toBe(10_000_000n)
        } finally {
          await gateway.stop()
        }
      }, 30_000)
    }
  }

  test('two instances sharing Redis and Postgres: still 5 of 20, split across them', async () => {
    const prefix = testKeyPrefix(`budgets-shared-${uniqueUser('s')}`)
    const url = await requireRedis()
    const start = async () => {
      const store = createStore({ url, keyPrefix: prefix })
      await storeReady(store)
      return startCostGateway({ env: { DATABASE_URL: database.url }, file: gatewayFile(sim.url), store })
    }
    const [a, b] = [await start(), await start()]
    try {
      const user = uniqueUser('budget-shared')
      const { key } = await a.createKey(user, 'open')
      await putBudget(a, `/users/${user}/budget`, '0.01')
      await b.ledger.budgets.refresh()
      const results = await Promise.all(
        Array.from(
          { length: 20 },
          async (_, i) => (await chat((i % 2 ? a : b).url, key, twoCents(i))).status,
        ),
      )
      expect(results.filter((status) => status === 200)).toHaveLength(5)
      expect(results.filter((status) => status === 429)).toHaveLength(15)
    } finally {
      await a.stop()
      await b.stop()
    }
  }, 30_000)
})

describe('monthly budgets through the admin API and /v1/usage', () => {
  let sim: SimServer
  let database: ThrowawayPostgres
  let gateway: CostGateway

  beforeAll(async () => {
    sim = await startSimServer({ port: 0 })
    database = await freshPostgresDatabase()
    gateway = await startCostGateway({ env: { DATABASE_URL: database.url }, file: gatewayFile(sim.url) })
  }, 30_000)
  afterAll(async () => {
    await gateway?.stop()
    await sim?.stop()
    await database?.drop()
  })

  const usage = async (key: string) =>
    (await (
      await fetch(`${gateway.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })
    ).json()) as {
      spend: { month_to_date_nano_usd: string }
      monthly_budget: { user: Record<string, string> | null; key: Record<string, string> | null }
    }
  const flushed = async (nano: bigint, user: string) => {
    const deadline = performance.now() + 5_000
    const firstDay = `${new Date().toISOString().slice(0, 7)}-01`
    while (((await gateway.ledger.budgets.userSpent([user], firstDay)).get(user) ?? 0n) < nano) {
      if (performance.now() > deadline) throw new Error('ledger did not catch up')
      await Bun.sleep(20)
    }
  }

  test('a budget set mid-month starts from what the ledger already recorded this month', async () => {
    const user = uniqueUser('seeded')
    const { key } = await gateway.createKey(user, 'open')
    for (let i = 0; i < 3; i++) expect((await chat(gateway.url, key, twoCents(i))).status).toBe(200)
    await flushed(6_000_000n, user)
    const view = await putBudget(gateway, `/users/${user}/budget`, '0.01')
    expect(view).toMatchObject({
      scope: 'user',
      user_id: user,
      key_id: null,
      monthly_budget_usd: '0.010000',
      monthly_budget_nano_usd: '10000000',
      spent_usd: '0.006000',
      remaining_usd: '0.004000',
    })
    const statuses = []
    for (let i = 3; i < 6; i++) statuses.push((await chat(gateway.url, key, twoCents(i))).status)
    expect(statuses).toEqual([200, 200, 429])
    const state = await usage(key)
    expect(state.monthly_budget.user).toMatchObject({
      limit_usd: '0.010000',
      used_nano_usd: '10000000',
      remaining_usd: '0.000000',
    })
    expect(state.monthly_budget.key).toBeNull()
  })

  test('removing a budget lifts it; setting it again counts the spend made meanwhile', async () => {
    const user = uniqueUser('toggled')
    const { key } = await gateway.createKey(user, 'open')
    await putBudget(gateway, `/users/${user}/budget`, '0.004')
    expect((await chat(gateway.url, key, twoCents(1))).status).toBe(200)
    expect((await chat(gateway.url, key, twoCents(2))).status).toBe(200)
    expect((await chat(gateway.url, key, twoCents(3))).status).toBe(429)
    expect((await putBudget(gateway, `/users/${user}/budget`, null)).monthly_budget_usd).toBeNull()
    expect((await chat(gateway.url, key, twoCents(4))).status).toBe(200)
    await flushed(6_000_000n, user)
    await putBudget(gateway, `/users/${user}/budget`, '0.008')
    expect((await chat(gateway.url, key, twoCents(5))).status).toBe(200)
    expect((await chat(gateway.url, key, twoCents(6))).status).toBe(429)
  })

  test('key and user budgets both apply; a key budget covers that key only', async () => {
    const user = uniqueUser('both')
    const first = await gateway.createKey(user, 'open')
    const second = await gateway.createKey(user, 'open')
    const keyView = await putBudget(gateway, `/keys/${first.id}/budget`, '0.002')
    expect(keyView).toMatchObject({
      scope: 'key',
      key_id: first.id,
      user_id: user,
      monthly_budget_usd: '0.002000',
    })
    await putBudget(gateway, `/users/${user}/budget`, '0.006')
    expect((await chat(gateway.url, first.key, twoCents(1))).status).toBe(200)
    const overKey = await chat(gateway.url, first.key, twoCents(2))
    expect(overKey.status).toBe(429)
    expect(((await overKey.json()) as { error: { message: string } }).error.message).toContain('this API key')
    expect((await chat(gateway.url, second.key, twoCents(3))).status).toBe(200)
    expect((await chat(gateway.url, second.key, twoCents(4))).status).toBe(200)
    const overUser = await chat(gateway.url, second.key, twoCents(5))
    expect(overUser.status).toBe(429)
    expect(Number(overUser.headers.get('retry-after'))).toBeGreaterThan(0)
    const state = await usage(first.key)
    expect(state.monthly_budget.key).toMatchObject({ limit_usd: '0.002000', used_usd: '0.002000' })
    expect(state.monthly_budget.user).toMatchObject({ limit_usd: '0.006000', used_usd: '0.006000' })
    await flushed(6_000_000n, user)
    const shown = await gateway.admin(`/keys/${first.id}/budget`)
    expect(((await shown.json()) as { spent_usd: string }).spent_usd).toBe('0.002000')
  })

  test('bad input: precise 400s, unknown key 404, no admin key 401', async () => {
    const bad = await gateway.admin('/users/someone/budget', {
      method: 'PUT',
      body: JSON.stringify({ monthly_budget_usd: '-1' }),
    })
    expect(bad.status).toBe(400)
    expect(bad.headers.get('content-type')).toContain('application/problem+json')
    const missing = await gateway.admin(`/keys/${crypto.randomUUID()}/budget`, {
      method: 'PUT',
      body: JSON.stringify({ monthly_budget_usd: '1' }),
    })
    expect(missing.status).toBe(404)
    const badUser = await gateway.admin('/users/not%20valid/budget')
    expect(badUser.status).toBe(400)
    const anonymous = await fetch(`${gateway.url}/admin/users/someone/budget`)
    expect(anonymous.status).toBe(401)
  })
})
