/**
 * The usage API: `GET /v1/usage` (the caller's own view), `GET /admin/keys/:id/usage` (any
 * key's) and `POST /admin/keys/:id/reset-limits`, checked against what the settled exchanges
 * actually used. The clock is injected, so remaining and reset figures are exact.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { requirePostgres } from './support/db'
import { adminKey, eventually, type Gateway, startGateway } from './support/gateway'
import { chat, createKeyAt, manualClock, sharedRedisStore, uniqueUser } from './support/quota'

let gateway: Gateway

beforeAll(async () => {
  const store = await sharedRedisStore('quota-usage')
  gateway = await startGateway({
    env: { DATABASE_URL: await requirePostgres() },
    file: { tiers: { open: { requests_per_minute: 10, requests_per_hour: null, cost_per_day_usd: null } } },
    store,
    clock: manualClock().now,
  })
})

afterAll(async () => {
  await gateway?.stop()
})

const admin = { authorization: `Bearer ${adminKey}` }

async function getJson(path: string, headers: Record<string, string>) {
  const response = await fetch(`${gateway.url}${path}`, { headers })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

/** Three settled requests; returns the tokens and cost they actually used. */
async function useThree(key: string) {
  const before = gateway.settled.length
  for (let i = 0; i < 3; i++) expect((await chat(gateway.url, key, { max_tokens: 8 })).status).toBe(200)
  await eventually(() => gateway.settled.length === before + 3)
  const mine = gateway.settled.slice(before)
  return {
    tokens: mine.reduce((sum, e) => sum + e.usage.promptTokens + e.usage.completionTokens, 0),
    costNano: mine.reduce((sum, e) => sum + e.costNanoUsd, 0n),
  }
}

describe('usage', () => {
  test('GET /v1/usage: every window, tokens and cost today, concurrency', async () => {
    const user = uniqueUser('usage')
    const { key } = await createKeyAt(gateway.url, user, 'free')
    const { tokens, costNano } = await useThree(key)
    expect(costNano).toBeGreaterThan(0n)
    const { status, body } = await getJson('/v1/usage', { authorization: `Bearer ${key}` })
    expect(status).toBe(200)
    const at = (seconds: number) => new Date(Date.now() + seconds * 1000)
    expect(body).toMatchObject({
      user_id: user,
      tier: 'free',
      windows: [
        { window: 'minute', limit: 10, used: 3, remaining: 7, reset_seconds: 18 },
        { window: 'hour', limit: 100, used: 3, remaining: 97, reset_seconds: 108 },
        { window: 'day', limit: 500, used: 3, remaining: 497, reset_seconds: 519 },
      ],
      tokens_today: { used: tokens, limit: 50000 },
      cost_today: {
        used_nano_usd: String(costNano),
        used_usd: expect.stringMatching(/^0\.\d{6}$/),
        limit_usd: '5.000000',
      },
      concurrent: { active: 0, limit: 2 },
    })
    const windows = body.windows as Array<{ reset_at: string; reset_seconds: number }>
    for (const window of windows) {
      const resetAt = Date.parse(window.reset_at)
      expect(Math.abs(resetAt - at(window.reset_seconds).getTime())).toBeLessThan(2000)
    }
  })

  test('unlimited figures are null, and tokens and cost are still counted', async () => {
    const { key } = await createKeyAt(gateway.url, uniqueUser('open'), 'open')
    const { tokens, costNano } = await useThree(key)
    const { body } = await getJson('/v1/usage', { authorization: `Bearer ${key}` })
    expect(body).toMatchObject({
      windows: [
        { window: 'minute', limit: 10, used: 3, remaining: 7 },
        { window: 'hour', limit: null, used: null, remaining: null },
        { window: 'day', limit: 500, used: 3, remaining: 497 },
      ],
      tokens_today: { used: tokens, limit: 50000 },
      cost_today: { used_nano_usd: String(costNano), limit_usd: null },
    })
  })

  test('admin usage shows the same figures for any key; reset clears them and says what', async () => {
    const user = uniqueUser('admin')
    const { id, key } = await createKeyAt(gateway.url, user, 'free')
    await useThree(key)
    const own = await getJson('/v1/usage', { authorization: `Bearer ${key}` })
    const viaAdmin = await getJson(`/admin/keys/${id}/usage`, admin)
    expect(viaAdmin.status).toBe(200)
    const withoutResetAt = (body: Record<string, unknown>) => ({
      ...body,
      windows: (body.windows as Array<Record<string, unknown>>).map(({ reset_at: _, ...rest }) => rest),
    })
    expect(withoutResetAt(viaAdmin.body)).toEqual(withoutResetAt(own.body))

    expect((await getJson(`/admin/keys/${id}/usage`, {})).status).toBe(401)
    expect((await getJson(`/admin/keys/${crypto.randomUUID()}/usage`, admin)).status).toBe(404)

    const reset = async () => {
      const response = await fetch(`${gateway.url}/admin/keys/${id}/reset-limits`, {
        method: 'POST',
        headers: admin,
      })
      expect(response.status).toBe(200)
      return response.json()
    }
    const cleared = [
      'requests_per_minute',
      'requests_per_hour',
      'requests_per_day',
      'tokens_per_day',
      'cost_per_day',
      'concurrent',
    ]
    expect(await reset()).toEqual({ key_id: id, user_id: user, cleared, stores: ['store'] })
    const after = await getJson('/v1/usage', { authorization: `Bearer ${key}` })
    expect(after.body).toMatchObject({
      windows: [
        { window: 'minute', used: 0, remaining: 10, reset_seconds: 0 },
        { window: 'hour', used: 0, remaining: 100 },
        { window: 'day', used: 0, remaining: 500 },
      ],
      tokens_today: { used: 0 },
      cost_today: { used_nano_usd: '0' },
    })
    // Nothing left to clear: the answer says no store held anything.
    expect(await reset()).toMatchObject({ stores: [] })
    // The full burst is available again.
    for (let i = 0; i < 10; i++) expect((await chat(gateway.url, key)).status).toBe(200)
    expect((await chat(gateway.url, key)).status).toBe(429)
  })
})
