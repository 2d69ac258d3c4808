/**
 * Cost reports on a seeded ledger, on Postgres and PGlite: per day (every day of the range,
 * in the shape DESIGN.md's "Contracts" gives), per model, top users and one user per day
 * and per model, each compared with an aggregation computed here from the seeded events.
 * Parameters are checked with precise 400s. /v1/usage reports spend today, month to date and
 * the projection. On Postgres, with a rollup of realistic size, EXPLAIN shows that every
 * report reads `daily_usage` through an index and never touches `usage_events`.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { sql } from 'drizzle-orm'
import postgres from 'postgres'
import { type EventRow, postgresSink, reportQueries } from '../plugins/cost'
import { Exchange, formatUsd, priceFromUsdPerMillion } from '../plugins/exchange'
import { type CostGateway, startCostGateway } from './support/cost'
import { freshPostgresDatabase, type ThrowawayPostgres } from './support/db'

const users = ['alice', 'bob', 'carol']
const models = ['model-a', 'model-b', 'model-c']
const outcomes = ['ok', 'ok', 'ok', 'error', 'cancelled', 'cached'] as const

/** 90 events over 2031-03-01..04 (one exactly at midnight), three users, three models. */
function seededEvents(): EventRow[] {
  return Array.from({ length: 90 }, (_, i) => {
    const outcome = outcomes[i % outcomes.length]!
    const cached = outcome === 'cached'
    const started = i === 0 ? Date.UTC(2031, 2, 2) : Date.UTC(2031, 2, 1 + (i % 4), (i * 7) % 24, i % 60)
    return {
      request_id: `seed-${i}-${crypto.randomUUID()}`,
      client_request_id: null,
      started_at: new Date(i === 1 ? Date.UTC(2031, 2, 1, 23, 59, 59, 999) : started).toISOString(),
      key_id: `key-${i % 5}`,
      user_id: users[i % 3]!,
      tier: 'free',
      route: '/v1/chat/completions',
      requested_model: models[(i * 5) % 3]!,
      served_model: models[(i * 5) % 3]!,
      provider: 'sim',
      stream: i % 2 === 0,
      status: outcome === 'error' ? 502 : outcome === 'cancelled' ? 499 : 200,
      outcome,
      error_code: null,
      cache_status: cached ? 'HIT' : 'MISS',
      prompt_tokens: cached ? 0 : 100 + i,
      completion_tokens: cached ? 0 : 10 + (i % 13),
      cached_tokens: 0,
      cost_nano_usd: cached ? '0' : String(1_234_567 * (i + 1)),
      saved_nano_usd: cached ? String(999_999 * (i + 1)) : '0',
      latency_ms: 10,
      ttft_ms: null,
      attempts: 1,
    }
  })
}

interface Figures {
  requests: number
  errors: number
  cache_hits: number
  prompt_tokens: number
  completion_tokens: number
  cost_usd: string
  cost_nano_usd: string
  saved_usd: string
  saved_nano_usd: string
}

/** The oracle: figures of a set of events, summed here with exact bigints. */
function figuresOf(events: EventRow[]): Figures {
  const cost = events.reduce((sum, e) => sum + BigInt(e.cost_nano_usd), 0n)
  const saved = events.reduce((sum, e) => sum + BigInt(e.saved_nano_usd), 0n)
  return {
    requests: events.length,
    errors: events.filter((e) => e.outcome === 'error').length,
    cache_hits: events.filter((e) => e.outcome === 'cached').length,
    prompt_tokens: events.reduce((sum, e) => sum + e.prompt_tokens, 0),
    completion_tokens: events.reduce((sum, e) => sum + e.completion_tokens, 0),
    cost_usd: formatUsd(cost),
    cost_nano_usd: cost.toString(),
    saved_usd: formatUsd(saved),
    saved_nano_usd: saved.toString(),
  }
}
const dayOf = (e: EventRow) => e.started_at.slice(0, 10)
const byCost = (a: Figures, b: Figures) => Number(BigInt(b.cost_nano_usd) - BigInt(a.cost_nano_usd))

for (const kind of ['postgres', 'pglite'] as const) {
  describe(`cost reports on ${kind}`, () => {
    let database: ThrowawayPostgres | null = null
    let gateway: CostGateway
    const events = seededEvents()

    beforeAll(async () => {
      database = kind === 'postgres' ? await freshPostgresDatabase() : null
      gateway = await startCostGateway({ env: database ? { DATABASE_URL: database.url } : {} })
      await postgresSink(gateway.runtime.database.db)(events)
    }, 30_000)
    afterAll(async () => {
      await gateway?.stop()
      await database?.drop()
    })

    const report = async (path: string) => {
      const response = await gateway.admin(path)
      expect(response.status).toBe(200)
      return response.json()
    }

    test('daily: every day of the range, zeros included, in the contract shape, and the total', async () => {
      const body = (await report('/costs/daily?from=2031-02-28&to=2031-03-05')) as {
        from: string
        to: string
        days: Array<{ day: string } & Figures>
        total: Figures
      }
      const days = ['2031-02-28', '2031-03-01', '2031-03-02', '2031-03-03', '2031-03-04', '2031-03-05']
      expect(body).toEqual({
        from: '2031-02-28',
        to: '2031-03-05',
        days: days.map((day) => ({ day, ...figuresOf(events.filter((e) => dayOf(e) === day)) })),
        total: figuresOf(events),
      })
      expect(Object.keys(body.days[0]!)).toEqual([
        'day',
        'requests',
        'errors',
        'cache_hits',
        'prompt_tokens',
        'completion_tokens',
        'cost_usd',
        'cost_nano_usd',
        'saved_usd',
        'saved_nano_usd',
      ])
    })

    test('models: per served model, highest cost first', async () => {
      const inRange = events.filter((e) => dayOf(e) >= '2031-03-02')
      const expected = models
        .map((model) => ({ model, ...figuresOf(inRange.filter((e) => e.served_model === model)) }))
        .sort(byCost)
      expect(await report('/costs/models?from=2031-03-02&to=2031-03-31')).toEqual({
        from: '2031-03-02',
        to: '2031-03-31',
        models: expected,
        total: figuresOf(inRange),
      })
    })

    test('top users: by cost, limited', async () => {
      const expected = users.map((user_id) => ({
        user_id,
        ...figuresOf(events.filter((e) => e.user_id === user_id)),
      }))
      expected.sort(byCost)
      expect(await report('/costs/users/top?from=2031-03-01&to=2031-03-04&limit=2')).toEqual({
        from: '2031-03-01',
        to: '2031-03-04',
        limit: 2,
        users: expected.slice(0, 2),
      })
    })

    test('one user: per day with that day’s models, per model, and the total', async () => {
      const mine = events.filter((e) => e.user_id === 'bob' && dayOf(e) <= '2031-03-03')
      const days = [...new Set(mine.map(dayOf))].sort().map((day) => {
        const ofDay = mine.filter((e) => dayOf(e) === day)
        const dayModels = [...new Set(ofDay.map((e) => e.served_model))].sort()
        return {
          day,
          ...figuresOf(ofDay),
          models: dayModels.map((model) => ({
            model,
            ...figuresOf(ofDay.filter((e) => e.served_model === model)),
          })),
        }
      })
      const perModel = [...new Set(mine.map((e) => e.served_model))]
        .map((model) => ({ model, ...figuresOf(mine.filter((e) => e.served_model === model)) }))
        .sort(byCost)
      expect(await report('/costs/users/bob?from=2031-03-01&to=2031-03-03')).toEqual({
        user_id: 'bob',
        from: '2031-03-01',
        to: '2031-03-03',
        days,
        models: perModel,
        total: figuresOf(mine),
      })
    })

    test('bad parameters answer a 400 problem naming the parameter', async () => {
      const cases: Array<[string, string]> = [
        ['/costs/daily?from=2031-3-1', 'from'],
        ['/costs/daily?from=2031-02-30&to=2031-03-01', 'from'],
        ['/costs/daily?from=2031-03-02&to=2031-03-01', 'from'],
        ['/costs/daily?from=2030-01-01&to=2031-03-01', 'to'],
        ['/costs/models?to=tomorrow', 'to'],
        ['/costs/users/top?limit=0', 'limit'],
        ['/costs/users/top?limit=1001', 'limit'],
        ['/costs/users/top?limit=ten', 'limit'],
        ['/costs/users/bad%20id', 'userId'],
      ]
      for (const [path, param] of cases) {
        const response = await gateway.admin(path)
        expect({ path, status: response.status }).toEqual({ path, status: 400 })
        expect(response.headers.get('content-type')).toContain('application/problem+json')
        expect(((await response.json()) as { param: string }).param).toBe(param)
      }
      expect((await fetch(`${gateway.url}/admin/costs/daily`)).status).toBe(401)
    })

    test('/v1/usage: spend today, month to date, and the projection it states', async () => {
      const { id, key } = await gateway.createKey(`spender-${kind}`)
      const price = priceFromUsdPerMillion({ input: 1, output: 2 })
      for (let i = 1; i <= 3; i++) {
        const exchange = new Exchange(gateway.runtime.settlements, {
          id: `spend-${kind}-${i}-${crypto.randomUUID()}`,
          method: 'POST',
          path: '/v1/chat/completions',
        })
        exchange.principal = { keyId: id, userId: `spender-${kind}`, tier: 'enterprise', overrides: {} }
        exchange.route = '/v1/chat/completions'
        exchange.requestedModel = exchange.servedModel = 'sim-1'
        exchange.price = price
        exchange.usage = { promptTokens: 1000 * i, completionTokens: 333 * i, cachedTokens: 0 }
        exchange.settle({ outcome: 'ok', status: 200 })
      }
      // 1000 + 2000 + 3000 prompt tokens at $1/M, 1998 completion tokens at $2/M.
      const spent = 6000n * 1000n + 1998n * 2000n
      const deadline = performance.now() + 5000
      while (gateway.ledger.stats().written < 3 && performance.now() < deadline) await Bun.sleep(20)
      const now = new Date()
      const elapsed = BigInt(now.getUTCDate())
      const daysInMonth = BigInt(
        new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 0)).getUTCDate(),
      )
      const projected = (spent * daysInMonth + elapsed / 2n) / elapsed
      const response = await fetch(`${gateway.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })
      expect(response.status).toBe(200)
      expect(((await response.json()) as { spend: unknown }).spend).toEqual({
        source: 'ledger',
        month: now.toISOString().slice(0, 7),
        today_usd: formatUsd(spent),
        today_nano_usd: spent.toString(),
        month_to_date_usd: formatUsd(spent),
        month_to_date_nano_usd: spent.toString(),
        projected_month_usd: formatUsd(projected),
        projected_month_nano_usd: projected.toString(),
        projection_method: 'month_to_date / elapsed_days * days_in_month',
        elapsed_days: Number(elapsed),
        days_in_month: Number(daysInMonth),
      })
    })

    if (kind === 'postgres')
      test('every report reads daily_usage through an index and never touches usage_events', async () => {
        const db = gateway.runtime.database.db
        // A realistic rollup: 300 users x 3 models x 400 days before the seeded month.
        await db.execute(sql`
          insert into daily_usage (user_id, day, model, requests, errors, cache_hits, prompt_tokens,
            completion_tokens, cost_nano_usd, saved_nano_usd)
          select 'bulk-' || u, date '2029-06-01' + d, 'model-' || m, 10, 1, 2, 1000, 100, 123456, 789
          from generate_series(1, 300) u, generate_series(0, 399) d, generate_series(1, 3) m`)
        await db.execute(sql`analyze daily_usage`)
        await db.execute(sql`analyze usage_events`)
        const direct = postgres(database!.url, { max: 1, onnotice: () => {} })
        try {
          for (const range of [
            { from: '2030-01-01', to: '2030-01-07' },
            { from: '2030-02-01', to: '2030-02-28' },
          ]) {
            const queries = reportQueries(db, range)
            for (const [name, query] of Object.entries({
              daily: queries.daily,
              models: queries.models,
              topUsers: queries.topUsers(10),
              user: queries.user('bulk-42'),
            })) {
              const { sql: text, params } = query.toSQL()
              const plan = (await direct.unsafe(`explain ${text}`, params as never[]))
                .map((row) => String(row['QUERY PLAN']))
                .join('\n')
              expect({
                name,
                range,
                touchesEvents: plan.includes('usage_events'),
                indexed: /Index (Only )?Scan|Bitmap Index Scan/.test(plan),
                seqScan: plan.includes('Seq Scan'),
              }).toEqual({ name, range, touchesEvents: false, indexed: true, seqScan: false })
            }
          }
        } finally {
          await direct.end({ timeout: 1 })
        }
      }, 60_000)
  })
}
