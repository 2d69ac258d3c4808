/**
 * The budget month: monthly budget counters roll over at 00:00 UTC on the 1st (leap years
 * and year ends included), computed inside the quota script from the same clock as the day,
 * on Redis and on its in-memory twin alike; Retry-After of a monthly denial runs to the end
 * of the month; a request admitted in one month settles into that month's counter.
 */
import { describe, expect, test } from 'bun:test'
import { Exchange, priceFromUsdPerMillion, SettlementHub } from '../plugins/exchange'
import { QuotaService } from '../plugins/quota'
import { MemoryStore, type Store } from '../plugins/store'
import { manualClock, noLimits, sharedRedisStore, uniqueUser } from './support/quota'

describe('the budget month', () => {
  const budget = { userLimitNano: 10_000_000n, userSeedNano: 0n, keyLimitNano: 0n, keySeedNano: 0n }

  function service(store: Store, now: () => number) {
    return new QuotaService({
      enabled: true,
      store,
      tiers: { open: noLimits },
      global: { concurrent: null, requests_per_hour: null, cost_per_day_usd: null },
      fallback: 'local',
      routeWeights: {},
      defaultMaxTokens: 2,
      leaseTtlMs: 60_000,
      refundRequestsOnError: false,
      now,
      onDecision: () => {},
      onFallback: () => {},
    })
  }

  function request(user: string) {
    const exchange = new Exchange(new SettlementHub(), {
      id: crypto.randomUUID(),
      method: 'POST',
      path: '/v1/x',
    })
    exchange.principal = { keyId: 'k', userId: user, tier: 'open', overrides: {} }
    exchange.price = priceFromUsdPerMillion({ input: 0, output: 1000 })
    // The cost plugin's note, as the quota plugin reads it.
    exchange.monthlyBudget = budget
    return exchange
  }

  for (const [name, makeStore] of [
    ['memory', async () => new MemoryStore()],
    ['redis', () => sharedRedisStore('budget-month')],
  ] as const) {
    test(`${name}: spend rolls over at 00:00 UTC on the 1st, leap years included, and Retry-After says when`, async () => {
      const store = await makeStore()
      for (const [last, next] of [
        [Date.UTC(2032, 1, 29, 23, 59, 59, 999), Date.UTC(2032, 2, 1)],
        [Date.UTC(2031, 11, 31, 23, 59, 59, 999), Date.UTC(2032, 0, 1)],
        [Date.UTC(2031, 3, 30, 23, 59, 59, 999), Date.UTC(2031, 4, 1)],
      ] as const) {
        const clock = manualClock(last - 1000)
        const quota = service(store, clock.now)
        const user = uniqueUser('month')
        for (let i = 0; i < 5; i++) await quota.reserve(request(user), 2)
        clock.set(last)
        const denied = await quota
          .reserve(request(user), 2)
          .catch((error: { headers: Record<string, string> }) => error)
        expect((denied as { headers: Record<string, string> }).headers['retry-after']).toBe('1')
        clock.set(next)
        const reservation = request(user)
        await quota.reserve(reservation, 2)
        const state = await quota.usage(reservation.principal!, budget)
        const month = new Date(next).toISOString().slice(0, 7).replace('-', '')
        expect(state.month).toEqual({ month: Number(month), userUsedNano: 2_000_000n, keyUsedNano: 0n })
        await quota.close()
      }
      await store.close()
    })

    test(`${name}: a request admitted in one month settles into that month`, async () => {
      const store = await makeStore()
      const clock = manualClock(Date.UTC(2031, 0, 31, 23, 59, 59))
      const quota = service(store, clock.now)
      const user = uniqueUser('crossing')
      const crossing = request(user)
      await quota.reserve(crossing, 2)
      clock.set(Date.UTC(2031, 1, 1, 0, 0, 1))
      const february = request(user)
      await quota.reserve(february, 2)
      crossing.usage = { promptTokens: 0, completionTokens: 1, cachedTokens: 0 }
      crossing.settle({ outcome: 'ok', status: 200 })
      await quota.reconcile(crossing)
      expect((await quota.usage(february.principal!, budget)).month?.userUsedNano).toBe(2_000_000n)
      clock.set(Date.UTC(2031, 0, 31, 23, 59, 59, 500))
      expect((await quota.usage(crossing.principal!, budget)).month?.userUsedNano).toBe(1_000_000n)
      await quota.close()
      await store.close()
    })
  }
})
