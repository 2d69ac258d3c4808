/**
 * Daily token and cost budgets through the HTTP surface, with the simulator server behind
 * the gateway so every upstream call is counted: a request whose reservation (prompt
 * estimate + max_tokens, or the configured default cap) would overrun the budget is denied
 * before the upstream is called, and reconciliation gives back what the answer did not use,
 * so the next request fits. A failed upstream call gives back its tokens but not its request.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { requirePostgres } from './support/db'
import { eventually, type Gateway, startGateway } from './support/gateway'
import { chat, manualClock, noLimits, sharedRedisStore, uniqueUser } from './support/quota'

let sim: SimServer
let gateway: Gateway

beforeAll(async () => {
  sim = await startSimServer({ port: 0 })
  const store = await sharedRedisStore('quota-budgets')
  gateway = await startGateway({
    env: { DATABASE_URL: await requirePostgres() },
    file: {
      providers: { upstream: { type: 'openai', base_url: sim.url } },
      // $1 per million tokens either way: one token costs 1000 nano-USD.
      models: {
        remote: { provider: 'upstream', upstream_model: 'sim-remote', pricing: { input: 1, output: 1 } },
      },
      tiers: {
        tokens: { ...noLimits, tokens_per_day: 200 },
        spend: { ...noLimits, cost_per_day_usd: 0.0002 },
        strict: { ...noLimits, requests_per_minute: 2, tokens_per_day: 200 },
      },
      quota: { default_max_tokens: 1024 },
    },
    store,
    clock: manualClock().now,
  })
})

afterAll(async () => {
  await gateway?.stop()
  await sim?.stop()
})

interface Usage {
  windows: Array<{ window: string; used: number | null }>
  tokens_today: { used: number; limit: number | null }
  cost_today: { used_nano_usd: string; limit_usd: string | null }
}

async function usageOf(key: string): Promise<Usage> {
  const response = await fetch(`${gateway.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })
  expect(response.status).toBe(200)
  return (await response.json()) as Usage
}

/** Sends one request and waits until its exchange has settled (reconciliation included). */
async function settledChat(key: string, maxTokens: number) {
  const before = gateway.settled.length
  const response = await chat(gateway.url, key, { model: 'remote', max_tokens: maxTokens })
  await response.text()
  await eventually(() => gateway.settled.length > before)
  return { status: response.status, exchange: gateway.settled.at(-1)! }
}

async function expectDeniedUpfront(key: string, init: { max_tokens?: number }, message: string) {
  const calls = sim.stats.chat
  const response = await chat(gateway.url, key, { model: 'remote', ...init })
  expect(response.status).toBe(429)
  const { error } = (await response.json()) as { error: { code: string; type: string; message: string } }
  expect(error.code).toBe('insufficient_quota')
  expect(error.type).toBe('insufficient_quota')
  expect(error.message).toContain(message)
  expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0)
  expect(sim.stats.chat).toBe(calls)
}

// "Hello there" is estimated at 3 prompt tokens, so max_tokens 150 reserves 153 of 200:
// two such reservations do not fit together, only a reconciled one and a new one do.
describe.each([
  ['tokens', 'tokens', '200 tokens per day for tier tokens'],
  ['cost', 'spend', '$0.000200 per day for tier spend'],
])('%s per day', (_kind, tier, message) => {
  test('a reservation over the budget is denied before the upstream is called', async () => {
    const key = await gateway.createKey(uniqueUser(tier), tier)
    await expectDeniedUpfront(key, { max_tokens: 198 }, message)
    // Without max_tokens the configured default cap (1024) is reserved, which cannot fit either.
    await expectDeniedUpfront(key, {}, message)
    expect(await usageOf(key)).toMatchObject({
      tokens_today: { used: 0 },
      cost_today: { used_nano_usd: '0' },
    })
  })

  test('reconciliation refunds the unused reservation, so the next request fits', async () => {
    const key = await gateway.createKey(uniqueUser(tier), tier)
    const calls = sim.stats.chat
    const first = await settledChat(key, 150)
    expect(first.status).toBe(200)
    const used = first.exchange.usage.promptTokens + first.exchange.usage.completionTokens
    expect(used).toBeLessThan(200 - 153)
    expect((await usageOf(key)).tokens_today.used).toBe(used)
    expect((await usageOf(key)).cost_today.used_nano_usd).toBe(String(used * 1000))

    const second = await settledChat(key, 150)
    expect(second.status).toBe(200)
    expect(sim.stats.chat).toBe(calls + 2)
    const total = used + second.exchange.usage.promptTokens + second.exchange.usage.completionTokens
    expect((await usageOf(key)).tokens_today.used).toBe(total)
    // Exactly what is left fits; one token more does not, and the upstream never sees it.
    await expectDeniedUpfront(key, { max_tokens: 200 - total - 3 + 1 }, message)
    expect((await settledChat(key, 200 - total - 3)).status).toBe(200)
  })
})

test('a failed upstream call gives back its tokens but keeps its request count', async () => {
  const key = await gateway.createKey(uniqueUser('strict'), 'strict')
  sim.addFaults([{ status: 500 }])
  const failed = await settledChat(key, 150)
  expect(failed.status).toBeGreaterThanOrEqual(500)
  const usage = await usageOf(key)
  expect(usage.tokens_today.used).toBe(0)
  expect(usage.windows.find((window) => window.window === 'minute')?.used).toBe(1)
  expect((await settledChat(key, 150)).status).toBe(200)
  expect((await chat(gateway.url, key, { model: 'remote', max_tokens: 1 })).status).toBe(429)
})
