/**
 * Every limit kind at its boundary and at its reset, driven by an injected clock, on the
 * memory store and on Redis: the same QuotaService, so the Lua scripts and their in-memory
 * twins are held to the same answers. The service is used directly (as the routes use it),
 * which lets each test pick its own tiers and global caps without starting a gateway.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import {
  ApiError,
  Exchange,
  freePrice,
  type Price,
  type Principal,
  priceFromUsdPerMillion,
  SettlementHub,
} from '../plugins/exchange'
import { type GlobalLimits, type QuotaService, quota, type TierLimits } from '../plugins/quota'
import { createStore, MemoryStore, type Store } from '../plugins/store'
import {
  type ManualClock,
  manualClock,
  nextMidnight,
  noLimits,
  storeReady,
  uniqueUser,
} from './support/quota'
import { requireRedis, testKeyPrefix } from './support/redis'

const noGlobal: GlobalLimits = { concurrent: null, requests_per_hour: null, cost_per_day_usd: null }

interface Setup {
  tier?: Partial<TierLimits>
  global?: Partial<GlobalLimits>
  routeWeights?: Record<string, number>
  leaseTtlMs?: number
  refundRequestsOnError?: boolean
}

interface Attempt {
  route?: string
  estimated?: number
  maxTokens?: number
  price?: Price
  overrides?: Record<string, unknown>
}

type Outcome =
  | { ok: true; exchange: Exchange; headers: Record<string, string> }
  | { ok: false; error: ApiError }

const stores: Store[] = []
afterEach(async () => {
  await Promise.all(stores.splice(0).map((store) => store.close()))
})

for (const backend of ['memory', 'redis'] as const) {
  describe(`quota limits on ${backend}`, () => {
    let clock: ManualClock
    let hub: SettlementHub
    let service: QuotaService

    async function setup({
      tier = {},
      global = {},
      routeWeights = {},
      leaseTtlMs = 30_000,
      refundRequestsOnError = false,
    }: Setup = {}) {
      clock = manualClock()
      hub = new SettlementHub()
      const store =
        backend === 'memory'
          ? new MemoryStore({ now: clock.now })
          : createStore({
              url: await requireRedis(),
              keyPrefix: testKeyPrefix(`limits-${crypto.randomUUID()}`),
            })
      stores.push(store)
      await storeReady(store)
      service = quota({
        store,
        hub,
        tiers: { t: { ...noLimits, ...tier } },
        global: { ...noGlobal, ...global },
        routeWeights,
        leaseTtlMs,
        refundRequestsOnError,
        now: clock.now,
      }).decorator.quota
    }

    const principalOf = (user: string, overrides: Record<string, unknown> = {}): Principal => ({
      keyId: `key-${user}`,
      userId: user,
      tier: 't',
      overrides,
    })

    async function attempt(user: string, options: Attempt = {}): Promise<Outcome> {
      const exchange = new Exchange(hub, { id: crypto.randomUUID(), method: 'POST', path: '/v1/x' })
      exchange.principal = principalOf(user, options.overrides)
      exchange.route = options.route ?? '/v1/chat/completions'
      exchange.estimatedTokens = options.estimated ?? 10
      exchange.price = options.price ?? freePrice
      try {
        return { ok: true, exchange, headers: await service.reserve(exchange, options.maxTokens ?? 0) }
      } catch (error) {
        if (!(error instanceof ApiError)) throw error
        return { ok: false, error }
      }
    }

    /** Settles as the route would, with what the upstream reported, and waits for reconciliation. */
    async function finish(outcome: Outcome, prompt = 0, completion = 0, result: 'ok' | 'error' = 'ok') {
      if (!outcome.ok) throw new Error('cannot settle a denied request')
      outcome.exchange.usage = { promptTokens: prompt, completionTokens: completion, cachedTokens: 0 }
      outcome.exchange.settle({ outcome: result, status: result === 'ok' ? 200 : 502 })
      await outcome.exchange.settled
    }

    function expectDenied(outcome: Outcome, code: string, message: string, retryAfter: number) {
      if (outcome.ok) throw new Error(`expected a denial (${message}), got an admission`)
      expect(outcome.error.status).toBe(429)
      expect(outcome.error.code).toBe(code)
      expect(outcome.error.message).toContain(message)
      expect(outcome.error.headers['retry-after']).toBe(String(retryAfter))
    }

    const windows = [
      ['minute', 60_000],
      ['hour', 3_600_000],
      ['day', 86_400_000],
    ] as const
    for (const [name, period] of windows) {
      test(`requests per ${name}: the 5th of 4 is denied, and one unit frees after period/4 (GCRA)`, async () => {
        await setup({ tier: { [`requests_per_${name}`]: 4 } })
        const user = uniqueUser(name)
        for (let i = 0; i < 4; i++) expect((await attempt(user)).ok).toBe(true)
        const interval = period / 4
        expectDenied(
          await attempt(user),
          'rate_limit_exceeded',
          `4 requests per ${name} for tier t`,
          interval / 1000,
        )
        clock.advance(interval - 1)
        expectDenied(await attempt(user), 'rate_limit_exceeded', `per ${name}`, 1)
        clock.advance(1)
        expect((await attempt(user)).ok).toBe(true)
        expectDenied(await attempt(user), 'rate_limit_exceeded', `per ${name}`, interval / 1000)
        // A full period later the whole burst is available again.
        clock.advance(period)
        for (let i = 0; i < 4; i++) expect((await attempt(user)).ok).toBe(true)
        expect((await attempt(user)).ok).toBe(false)
      })
    }

    test('refund_requests_on_error: a failed call gives its units back to every window, a success does not', async () => {
      await setup({ tier: { requests_per_minute: 2, requests_per_hour: 3 }, refundRequestsOnError: true })
      const user = uniqueUser('refund')
      const first = await attempt(user)
      const second = await attempt(user)
      expectDenied(await attempt(user), 'rate_limit_exceeded', '2 requests per minute', 30)
      await finish(second, 10, 0, 'error')
      // The failed call's unit is back in both windows; the successful one keeps its unit.
      const third = await attempt(user)
      expect(third.ok).toBe(true)
      await finish(first, 10, 5)
      await finish(third, 10, 5)
      expectDenied(await attempt(user), 'rate_limit_exceeded', '2 requests per minute', 30)
      clock.advance(60_000)
      // The hour holds three: the two successes and this one (the failed call's unit came back).
      expect((await attempt(user)).ok).toBe(true)
      expectDenied(await attempt(user), 'rate_limit_exceeded', '3 requests per hour', 1140)
    })

    test('route weights consume more units of every window', async () => {
      await setup({ tier: { requests_per_minute: 10 }, routeWeights: { '/v1/embeddings': 4 } })
      const user = uniqueUser('weights')
      const embeddings = { route: '/v1/embeddings' }
      expect((await attempt(user, embeddings)).ok).toBe(true)
      expect((await attempt(user, embeddings)).ok).toBe(true)
      // 8 of 10 used: 4 more do not fit; they would in 12 s (two intervals of 6 s).
      expectDenied(await attempt(user, embeddings), 'rate_limit_exceeded', '10 requests per minute', 12)
      expect((await attempt(user)).ok).toBe(true)
      expect((await attempt(user)).ok).toBe(true)
      expectDenied(await attempt(user), 'rate_limit_exceeded', '10 requests per minute', 6)
    })

    test('tokens per day: the reservation must fit, reconciliation refunds, midnight UTC resets', async () => {
      await setup({ tier: { tokens_per_day: 1000, requests_per_minute: 100 } })
      const user = uniqueUser('tokens')
      clock.set(nextMidnight(clock.now()) - 3_600_000)
      const first = await attempt(user, { estimated: 100, maxTokens: 400 })
      expect(first.ok).toBe(true)
      const tooMuch = await attempt(user, { estimated: 100, maxTokens: 401 })
      expectDenied(tooMuch, 'insufficient_quota', 'Budget exceeded: 1000 tokens per day for tier t', 3600)
      if (!tooMuch.ok) expect(tooMuch.error.type).toBe('insufficient_quota')
      const exact = await attempt(user, { estimated: 100, maxTokens: 400 })
      expect(exact.ok).toBe(true)
      // The first used 50 of its 500: 450 come back, so exactly 450 more fit.
      await finish(first, 30, 20)
      expectDenied(
        await attempt(user, { estimated: 51, maxTokens: 400 }),
        'insufficient_quota',
        'tokens',
        3600,
      )
      expect((await attempt(user, { estimated: 50, maxTokens: 400 })).ok).toBe(true)
      expect((await service.usage(principalOf(user))).tokensUsed).toBe(1000)
      clock.set(nextMidnight(clock.now()) - 1)
      expectDenied(await attempt(user, { maxTokens: 1 }), 'insufficient_quota', 'tokens', 1)
      clock.advance(1)
      expect((await attempt(user, { estimated: 500, maxTokens: 500 })).ok).toBe(true)
      // Settling yesterday's reservation charges yesterday, not the new day.
      await finish(exact, 1, 1)
      expect((await service.usage(principalOf(user))).tokensUsed).toBe(1000)
    })

    test('cost per day: priced reservation must fit, reconciliation refunds, midnight UTC resets', async () => {
      await setup({ tier: { cost_per_day_usd: 0.001 } })
      const user = uniqueUser('cost')
      // 1000 nano-USD per prompt token, 2000 per completion token: 100 + 200 tokens = $0.0005.
      const price = priceFromUsdPerMillion({ input: 1, output: 2 })
      const request = { estimated: 100, maxTokens: 200, price }
      const first = await attempt(user, request)
      expect(first.ok).toBe(true)
      expect((await attempt(user, request)).ok).toBe(true)
      expectDenied(
        await attempt(user, { ...request, maxTokens: 1 }),
        'insufficient_quota',
        '$0.001000 per day for tier t',
        Math.ceil((nextMidnight(clock.now()) - clock.now()) / 1000),
      )
      await finish(first, 100, 50)
      // The first cost $0.0002 of its $0.0005: $0.0003 is free again, exactly 100 prompt and
      // 100 completion tokens.
      expect((await attempt(user, { ...request, maxTokens: 101 })).ok).toBe(false)
      expect((await attempt(user, { ...request, maxTokens: 100 })).ok).toBe(true)
      expect((await service.usage(principalOf(user))).costUsedNano).toBe(1_000_000n)
      clock.set(nextMidnight(clock.now()))
      expect((await attempt(user, request)).ok).toBe(true)
    })

    test('concurrency: a lease frees on settlement (success or error) and by expiry', async () => {
      await setup({ tier: { concurrent: 2 }, leaseTtlMs: 30_000 })
      const user = uniqueUser('leases')
      const [a, b] = [await attempt(user), await attempt(user)]
      expect(a.ok && b.ok).toBe(true)
      expectDenied(await attempt(user), 'rate_limit_exceeded', '2 concurrent requests for tier t', 1)
      await finish(a)
      const c = await attempt(user)
      expect(c.ok).toBe(true)
      await finish(c, 0, 0, 'error')
      expect((await attempt(user)).ok).toBe(true)
      expect((await attempt(user)).ok).toBe(false)
      expect((await service.usage(principalOf(user))).concurrentUsed).toBe(2)
      clock.advance(30_000)
      expect((await service.usage(principalOf(user))).concurrentUsed).toBe(0)
      expect((await attempt(user)).ok).toBe(true)
    })

    test('global requests per hour: across users, and a denial reserves nothing in the user scope', async () => {
      await setup({ tier: { requests_per_minute: 10 }, global: { requests_per_hour: 3 } })
      for (let i = 0; i < 3; i++) expect((await attempt(uniqueUser('g'))).ok).toBe(true)
      const late = uniqueUser('g-late')
      const denied = await attempt(late)
      expectDenied(denied, 'rate_limit_exceeded', '3 requests per hour for the gateway', 1200)
      // The headers still describe the caller's own windows, not the gateway's.
      if (!denied.ok) expect(denied.error.headers['ratelimit-policy']).toBe('"minute";q=10;w=60')
      const untouched = await service.usage(principalOf(late))
      expect(untouched.windows[0]!.remaining).toBe(10)
      clock.advance(1_200_000)
      expect((await attempt(late)).ok).toBe(true)
      expect((await attempt(uniqueUser('g'))).ok).toBe(false)
    })

    test('global concurrency and global cost per day', async () => {
      await setup({ global: { concurrent: 1, cost_per_day_usd: 0.001 } })
      const price = priceFromUsdPerMillion({ input: 1, output: 1 })
      const holder = await attempt(uniqueUser('gc'), { estimated: 100, maxTokens: 400, price })
      expectDenied(
        await attempt(uniqueUser('gc')),
        'rate_limit_exceeded',
        '1 concurrent requests for the gateway',
        1,
      )
      await finish(holder, 100, 400)
      const second = await attempt(uniqueUser('gc'), { estimated: 100, maxTokens: 400, price })
      expect(second.ok).toBe(true)
      await finish(second, 100, 400)
      expectDenied(
        await attempt(uniqueUser('gc'), { estimated: 1, price }),
        'insufficient_quota',
        '$0.001000 per day for the gateway',
        Math.ceil((nextMidnight(clock.now()) - clock.now()) / 1000),
      )
      clock.set(nextMidnight(clock.now()))
      expect((await attempt(uniqueUser('gc'), { estimated: 1, price })).ok).toBe(true)
    })

    test('when several limits deny, Retry-After is the wait of the one that frees last', async () => {
      await setup({ tier: { requests_per_minute: 2, requests_per_hour: 3 } })
      const user = uniqueUser('longest')
      expect((await attempt(user)).ok).toBe(true)
      expect((await attempt(user)).ok).toBe(true)
      clock.advance(30_000)
      expect((await attempt(user)).ok).toBe(true)
      // The minute window would allow one in 30 s, but the hour window only in 1170 s.
      expectDenied(await attempt(user), 'rate_limit_exceeded', '3 requests per hour for tier t', 1170)
      clock.advance(1_170_000 - 1)
      expect((await attempt(user)).ok).toBe(false)
      clock.advance(1)
      expect((await attempt(user)).ok).toBe(true)
    })

    test('per-key overrides replace the tier limit', async () => {
      await setup({ tier: { requests_per_minute: 10 } })
      const user = uniqueUser('override')
      const overrides = { requests_per_minute: 1 }
      expect((await attempt(user, { overrides })).ok).toBe(true)
      expectDenied(await attempt(user, { overrides }), 'rate_limit_exceeded', '1 requests per minute', 60)
    })
  })
}
