/**
 * Tenant isolation through every user-facing route (issue 9, item 4): one gateway, two users
 * (alice and bob) on one small tier, the simulator server behind it over HTTP. Each user's
 * cache entries (chat and embeddings), quota windows and usage, ledgered costs and streams
 * are invisible to and unaffected by the other's: a deterministic answer cached for alice is a
 * MISS for bob and survives the invalidation of bob's cache; exhausting or resetting alice's
 * limits leaves bob's; each cost report holds only its user's requests; cancelling alice's
 * stream leaves bob's running to completion. A user key never reaches /admin (401, with no
 * effect), and /v1/usage answers for the caller whatever the query says.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { adminKey, eventually, type Gateway, sseReader, startGateway } from './support/gateway'

const run = crypto.randomUUID().slice(0, 8)
/** Unique per run: the shared Postgres keeps every run's ledger rows. */
const users = { alice: `iso-alice-${run}`, bob: `iso-bob-${run}` }
type User = keyof typeof users
const perMinute = 20

let sim: SimServer
let gateway: Gateway
const keys = {} as Record<User, { id: string; key: string }>

const admin = (path: string, method = 'GET', token = adminKey) =>
  fetch(`${gateway.url}/admin${path}`, { method, headers: { authorization: `Bearer ${token}` } })

const v1 = (user: User, path: string, body?: unknown) =>
  fetch(`${gateway.url}/v1${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${keys[user].key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })

const settledFor = (id: string | null) => gateway.settled.find((exchange) => exchange.id === id)

/** A model request read to the end and settled; answers its status and X-Cache. */
async function call(user: User, path: '/chat/completions' | '/embeddings', body: unknown) {
  const response = await v1(user, path, body)
  await response.text()
  const id = response.headers.get('x-request-id')
  if (response.status === 200) await eventually(() => settledFor(id) !== undefined)
  return { status: response.status, cache: response.headers.get('x-cache') }
}
const chat = (user: User, content: string) =>
  call(user, '/chat/completions', {
    model: 'remote-chat',
    temperature: 0,
    max_tokens: 8,
    messages: [{ role: 'user', content }],
  })
const embed = (user: User, input: string) => call(user, '/embeddings', { model: 'remote-embed', input })

interface Usage {
  user_id: string
  windows: { window: string; used: number | null }[]
  tokens_today: { used: number }
  cost_today: { used_nano_usd: string }
}
const usageOf = async (user: User, query = '') => (await (await v1(user, `/usage${query}`)).json()) as Usage
/** The parts of a usage view that requests change (not the reset times). */
const counters = (usage: Usage) => ({
  user: usage.user_id,
  windows: usage.windows.map(({ window, used }) => ({ window, used })),
  tokens: usage.tokens_today.used,
  cost: usage.cost_today.used_nano_usd,
})
const minuteUsed = (usage: Usage) => usage.windows.find((w) => w.window === 'minute')?.used

beforeAll(async () => {
  sim = await startSimServer({ port: 0 })
  gateway = await startGateway({
    file: {
      providers: { upstream: { type: 'openai', base_url: sim.url } },
      models: {
        'remote-chat': { provider: 'upstream', upstream_model: 'sim-1', pricing: { input: 1, output: 2 } },
        'remote-embed': {
          provider: 'upstream',
          upstream_model: 'sim-embed-1',
          kind: 'embedding',
          pricing: { input: 1, output: 0 },
        },
      },
      tiers: { small: { requests_per_minute: perMinute, concurrent: 5 } },
      ledger: { flush_interval_ms: 20, shutdown_timeout_ms: 2000 },
    },
  })
  for (const user of ['alice', 'bob'] as const) {
    const response = await fetch(`${gateway.url}/admin/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: users[user], name: 'isolation', tier: 'small' }),
    })
    expect(response.status).toBe(201)
    keys[user] = (await response.json()) as { id: string; key: string }
  }
})

afterAll(async () => {
  await gateway?.stop()
  await sim?.stop()
})

describe('cache', () => {
  test("alice's cached chat answer is a MISS for bob; invalidating bob's leaves alice's HIT", async () => {
    expect(await chat('alice', 'isolation question')).toEqual({ status: 200, cache: 'MISS' })
    expect(await chat('alice', 'isolation question')).toEqual({ status: 200, cache: 'HIT' })
    expect(await chat('bob', 'isolation question')).toEqual({ status: 200, cache: 'MISS' })
    expect(await chat('bob', 'isolation question')).toEqual({ status: 200, cache: 'HIT' })
    const invalidated = await admin(`/cache?user=${users.bob}`, 'DELETE')
    expect(invalidated.status).toBe(200)
    expect(await invalidated.json()).toMatchObject({ scope: 'user', user_id: users.bob })
    expect((await chat('alice', 'isolation question')).cache).toBe('HIT')
    expect((await chat('bob', 'isolation question')).cache).toBe('MISS')
  })

  test('embeddings likewise', async () => {
    expect((await embed('alice', 'isolated vector')).cache).toBe('MISS')
    expect((await embed('alice', 'isolated vector')).cache).toBe('HIT')
    expect((await embed('bob', 'isolated vector')).cache).toBe('MISS')
    expect((await admin(`/cache?user=${users.bob}`, 'DELETE')).status).toBe(200)
    expect((await embed('alice', 'isolated vector')).cache).toBe('HIT')
    expect((await embed('bob', 'isolated vector')).cache).toBe('MISS')
  })
})

describe('usage and quota', () => {
  test("/v1/usage shows only the caller's counters; alice's requests leave bob's unchanged", async () => {
    const bobBefore = counters(await usageOf('bob'))
    const aliceBefore = counters(await usageOf('alice'))
    expect(bobBefore.user).toBe(users.bob)
    expect(aliceBefore.user).toBe(users.alice)
    expect((await chat('alice', 'alice spends')).status).toBe(200)
    expect((await chat('alice', 'alice spends more')).status).toBe(200)
    expect(counters(await usageOf('bob'))).toEqual(bobBefore)
    const aliceAfter = await usageOf('alice')
    expect(minuteUsed(aliceAfter)).toBe(aliceBefore.windows.find((w) => w.window === 'minute')!.used! + 2)
    expect(aliceAfter.tokens_today.used).toBeGreaterThan(aliceBefore.tokens)
    expect(BigInt(aliceAfter.cost_today.used_nano_usd)).toBeGreaterThan(BigInt(aliceBefore.cost))

    const aliceNow = counters(await usageOf('alice'))
    expect((await chat('bob', 'bob spends')).status).toBe(200)
    expect(counters(await usageOf('alice'))).toEqual(aliceNow)
  })

  test("exhausting alice's tier does not deny bob; resetting alice's limits leaves bob's", async () => {
    expect((await admin(`/keys/${keys.alice.id}/reset-limits`, 'POST')).status).toBe(200)
    for (let i = 0; i < perMinute; i++) expect((await chat('alice', 'burst')).status).toBe(200)
    expect((await chat('alice', 'burst')).status).toBe(429)
    expect((await chat('bob', 'burst')).status).toBe(200)

    const bob = counters(await usageOf('bob'))
    const reset = await admin(`/keys/${keys.alice.id}/reset-limits`, 'POST')
    expect(reset.status).toBe(200)
    expect(await reset.json()).toMatchObject({ key_id: keys.alice.id, user_id: users.alice })
    expect(counters(await usageOf('bob'))).toEqual(bob)
    expect(minuteUsed(await usageOf('alice'))).toBe(0)
    expect((await chat('alice', 'burst')).status).toBe(200)
  })
})

describe('costs', () => {
  interface Report {
    user_id: string
    total: { requests: number; cost_nano_usd: string }
  }
  const report = async (user: User) => (await (await admin(`/costs/users/${users[user]}`)).json()) as Report
  /** What the ledger must hold for a user: exactly the user's settled exchanges. */
  const expected = (user: User) => {
    const own = gateway.settled.filter((exchange) => exchange.principal?.userId === users[user])
    const cost = own.reduce((sum, exchange) => sum + exchange.costNanoUsd, 0n)
    return { user_id: users[user], requests: own.length, cost_nano_usd: cost.toString() }
  }
  const summary = ({ user_id, total }: Report) => ({
    user_id,
    requests: total.requests,
    cost_nano_usd: total.cost_nano_usd,
  })

  test("after settlement each user's cost report holds only that user's requests", async () => {
    const reports = async () => [summary(await report('alice')), summary(await report('bob'))]
    const deadline = performance.now() + 3000
    let seen = await reports()
    while (
      performance.now() < deadline &&
      JSON.stringify(seen) !== JSON.stringify([expected('alice'), expected('bob')])
    ) {
      await Bun.sleep(25)
      seen = await reports()
    }
    expect(seen).toEqual([expected('alice'), expected('bob')])
    expect(expected('alice').requests).toBeGreaterThan(0)
    expect(expected('alice').requests).not.toBe(expected('bob').requests)
  })
})

describe('streams', () => {
  /** A streaming chat request whose SSE text is read as it arrives. */
  async function openStream(user: User) {
    const response = await v1(user, '/chat/completions', {
      model: 'remote-chat',
      stream: true,
      max_tokens: 6,
      messages: [{ role: 'user', content: `a stream for ${user}` }],
    })
    expect(response.status).toBe(200)
    const stream = sseReader(response)
    return Object.assign(stream, {
      frames: () => stream.text.split('\n\n').filter((frame) => frame.startsWith('data: ')),
    })
  }
  const listed = async () =>
    ((await (await admin('/streams')).json()) as { data: { id: string; user_id: string }[] }).data

  test("each stream is listed with its own user; cancelling alice's leaves bob's to complete", async () => {
    sim.addFaults([{ stall_after_chunks: { chunks: 2, ms: 600 }, times: 2 }])
    const alice = await openStream('alice')
    const bob = await openStream('bob')
    await alice.readUntil(() => alice.frames().length >= 2)
    await bob.readUntil(() => bob.frames().length >= 2)
    const entries = await listed()
    expect(entries.find((entry) => entry.id === alice.id)?.user_id).toBe(users.alice)
    expect(entries.find((entry) => entry.id === bob.id)?.user_id).toBe(users.bob)

    expect((await admin(`/streams/${alice.id}/cancel`, 'POST')).status).toBe(200)
    await alice.readUntil(() => false)
    expect(alice.frames().at(-1)).toContain('"code":"cancelled"')
    const remaining = (await listed()).map((entry) => entry.id)
    expect(remaining).toContain(bob.id)
    expect(remaining).not.toContain(alice.id)

    await bob.readUntil(() => false)
    expect(bob.frames().at(-1)).toBe('data: [DONE]')
    expect(bob.text).not.toContain('cancelled')
    await eventually(() => settledFor(bob.id) !== undefined && settledFor(alice.id) !== undefined, 3000)
    expect(settledFor(bob.id)!.settlement?.outcome).toBe('ok')
    expect(settledFor(alice.id)!.settlement?.outcome).toBe('cancelled')
  })
})

describe('user keys and /admin', () => {
  test('a user key never reaches an admin route, and its attempt changes nothing', async () => {
    expect((await chat('alice', 'still mine')).cache).toBe('MISS')
    const attempts: [string, string][] = [
      ['/keys', 'GET'],
      [`/keys/${keys.alice.id}`, 'GET'],
      [`/keys/${keys.alice.id}/usage`, 'GET'],
      [`/keys/${keys.alice.id}/reset-limits`, 'POST'],
      [`/keys/${keys.alice.id}`, 'DELETE'],
      [`/cache?user=${users.alice}`, 'DELETE'],
      ['/cache', 'DELETE'],
      [`/costs/users/${users.alice}`, 'GET'],
      ['/costs/users/top', 'GET'],
      [`/users/${users.alice}/budget`, 'GET'],
      ['/streams', 'GET'],
      ['/streams/anything/cancel', 'POST'],
      ['/breakers', 'GET'],
    ]
    const alice = await usageOf('alice')
    for (const [path, method] of attempts) {
      const response = await admin(path, method, keys.bob.key)
      expect({ path, method, status: response.status }).toEqual({ path, method, status: 401 })
    }
    expect(counters(await usageOf('alice'))).toEqual(counters(alice))
    expect((await chat('alice', 'still mine')).cache).toBe('HIT')
    expect((await v1('alice', '/models')).status).toBe(200)
  })

  test('/v1/usage answers for the caller whatever the query names', async () => {
    const bob = counters(await usageOf('bob'))
    for (const query of [
      `?user=${users.alice}`,
      `?user_id=${users.alice}`,
      `?key_id=${keys.alice.id}`,
      `?id=${keys.alice.id}`,
    ])
      expect(counters(await usageOf('bob', query))).toEqual(bob)
  })
})
