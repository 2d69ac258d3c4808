/**
 * Helpers for the cost and ledger tests: a gateway whose ledger the test can reach (to
 * close it before the database, as src/main.ts does) and ledger readers.
 */
import { sql } from 'drizzle-orm'
import { type Db, queryRows } from '../../db/client'
import type { Ledger } from '../../plugins/cost'
import { createApp } from '../../src/app'
import type { Env } from '../../src/config'
import { setLogLevel } from '../../src/log'
import { createRuntime, type Runtime, type RuntimeOverrides } from '../../src/runtime'
import { adminKey, gatewayConfig, listenOnFreshPort } from './gateway'

export interface CostGateway {
  url: string
  runtime: Runtime
  ledger: Ledger
  /** Creates a key through the admin API; returns its id and plaintext. */
  createKey(user: string, tier?: string): Promise<{ id: string; key: string }>
  /** Admin API call with the admin key. */
  admin(path: string, init?: RequestInit): Promise<Response>
  /**
   * Stops listening (with `drain`, after in-flight requests finish, as src/main.ts does),
   * flushes the ledger, then closes Redis and the database.
   */
  stop(options?: { drain?: boolean }): Promise<void>
}

export interface CostGatewayOptions extends RuntimeOverrides {
  env?: Env
  file?: Record<string, unknown>
}

export async function startCostGateway({ env = {}, file = {}, ...overrides }: CostGatewayOptions = {}) {
  setLogLevel('silent')
  const runtime = await createRuntime(gatewayConfig(env, file), overrides)
  const app = listenOnFreshPort(createApp(runtime))
  const url = `http://127.0.0.1:${app.server!.port}`
  const ledger = app.decorator.ledger
  const admin = (path: string, init: RequestInit = {}) =>
    fetch(`${url}/admin${path}`, {
      ...init,
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json', ...init.headers },
    })
  const gateway: CostGateway = {
    url,
    runtime,
    ledger,
    admin,
    async createKey(user, tier = 'enterprise') {
      const response = await admin('/keys', {
        method: 'POST',
        body: JSON.stringify({ user_id: user, name: 'test', tier }),
      })
      if (response.status !== 201) throw new Error(`key creation failed: ${response.status}`)
      return (await response.json()) as { id: string; key: string }
    },
    async stop({ drain = false } = {}) {
      await app.server!.stop(!drain)
      await ledger.close()
      await app.stop(true)
      await runtime.close()
    },
  }
  return gateway
}

export interface LedgerTotals {
  events: number
  distinctRequests: number
  cost: bigint
  saved: bigint
}

export async function ledgerTotals(db: Db): Promise<LedgerTotals> {
  const [row] = await queryRows<{ events: string; distinct_requests: string; cost: string; saved: string }>(
    db,
    sql`select count(*)::text as events, count(distinct request_id)::text as distinct_requests,
      coalesce(sum(cost_nano_usd), 0)::text as cost, coalesce(sum(saved_nano_usd), 0)::text as saved
      from usage_events`,
  )
  return {
    events: Number(row!.events),
    distinctRequests: Number(row!.distinct_requests),
    cost: BigInt(row!.cost),
    saved: BigInt(row!.saved),
  }
}

/**
 * Rows of `daily_usage` that differ from the aggregate of `usage_events` (either way):
 * empty when the rollup is exact.
 */
export async function rollupMismatches(db: Db): Promise<Record<string, unknown>[]> {
  return queryRows(
    db,
    sql`with expected as (
      select user_id, (started_at at time zone 'UTC')::date as day, served_model as model,
        count(*) as requests, count(*) filter (where outcome = 'error') as errors,
        count(*) filter (where outcome = 'cached') as cache_hits,
        sum(prompt_tokens) as prompt_tokens, sum(completion_tokens) as completion_tokens,
        sum(cost_nano_usd) as cost_nano_usd, sum(saved_nano_usd) as saved_nano_usd
      from usage_events group by 1, 2, 3
    ), actual as (
      select user_id, day, model, requests, errors, cache_hits, prompt_tokens, completion_tokens,
        cost_nano_usd, saved_nano_usd from daily_usage
    )
    select 'missing_or_different' as problem, e.user_id, e.day::text, e.model from expected e
      where not exists (select 1 from actual a where a.user_id = e.user_id and a.day = e.day
        and a.model = e.model and a.requests = e.requests and a.errors = e.errors
        and a.cache_hits = e.cache_hits and a.prompt_tokens = e.prompt_tokens
        and a.completion_tokens = e.completion_tokens and a.cost_nano_usd = e.cost_nano_usd
        and a.saved_nano_usd = e.saved_nano_usd)
    union all
    select 'extra' as problem, a.user_id, a.day::text, a.model from actual a
      where not exists (select 1 from expected e where e.user_id = a.user_id and e.day = a.day
        and e.model = a.model)`,
  )
}
