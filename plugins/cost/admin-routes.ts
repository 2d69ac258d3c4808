/**
 * The cost admin API: reports (per day, per model, top users, one user), monthly budgets of
 * users and keys, and the ledger's own state. Defined without a prefix and without auth:
 * `src/app.ts` mounts it under `/admin` inside a guard that requires the admin key.
 */
import { Elysia } from 'elysia'
import { ApiError } from '../exchange'
import { amount, dayMs, isoDay, monthOf, parseDay, parseUsd } from './calendar'
import type { Ledger } from './ledger'
import {
  BudgetBody,
  BudgetView,
  DailyReport,
  KeyParams,
  LedgerStatsView,
  ModelsReport,
  Problem,
  RangeQuery,
  TopQuery,
  TopUsersReport,
  UserParams,
  UserReport,
} from './schemas'

export interface CostAdminOptions {
  ledger: Ledger
  /**
   * Longest report range, in days.
   * @default 366
   */
  maxRangeDays?: number
  /** Clock in epoch ms (today's date for default ranges and budget months). */
  now?: () => number
}

const badRange = (message: string, param: string) =>
  new ApiError({ status: 400, message, code: 'invalid_range', param })

const keyNotFound = (id: string) =>
  new ApiError({ status: 404, message: `No API key with id ${id}.`, code: 'key_not_found', param: 'id' })

/** A budget as the API takes it, in nano-USD; null (or zero) means no budget. */
function budgetOf(usd: string | null): bigint | null {
  const nano = usd === null ? null : parseUsd(usd)
  return nano === null || nano === 0n ? null : nano
}

const docs = (summary: string, description?: string) => ({
  summary,
  description,
  tags: ['costs'],
  security: [{ bearerAuth: [] }],
})

const errors = { 400: Problem, 401: Problem, 503: Problem }

export function costAdmin({ ledger, maxRangeDays = 366, now = Date.now }: CostAdminOptions) {
  /** Checks and completes a range: real calendar days, from <= to, at most maxRangeDays days. */
  function range(query: { from?: string; to?: string }) {
    const to = query.to ?? isoDay(now())
    const from = query.from ?? `${to.slice(0, 8)}01`
    const fromMs = parseDay(from)
    const toMs = parseDay(to)
    if (fromMs === null) throw badRange(`Invalid 'from': ${from} is not a calendar day.`, 'from')
    if (toMs === null) throw badRange(`Invalid 'to': ${to} is not a calendar day.`, 'to')
    if (fromMs > toMs) throw badRange(`'from' (${from}) is after 'to' (${to}).`, 'from')
    const days = (toMs - fromMs) / dayMs + 1
    if (days > maxRangeDays)
      throw badRange(`The range spans ${days} days; at most ${maxRangeDays} are allowed.`, 'to')
    return { from, to }
  }

  function limit(value: number | undefined): number {
    if (value === undefined) return 10
    if (value < 1 || value > 1000)
      throw new ApiError({
        status: 400,
        message: `Invalid 'limit': ${value} is not from 1 to 1000.`,
        code: 'invalid_value',
        param: 'limit',
      })
    return value
  }

  async function budgetView(scope: 'user' | 'key', userId: string, keyId: string | null, limit: bigint) {
    const month = monthOf(now())
    const spent =
      (keyId === null
        ? await ledger.budgets.userSpent([userId], month.firstDay)
        : await ledger.budgets.keySpent([keyId], month.firstDay)
      ).get(keyId ?? userId) ?? 0n
    const budgeted = limit > 0n
    const remaining = limit - spent > 0n ? limit - spent : 0n
    return {
      scope,
      user_id: userId,
      key_id: keyId,
      month: month.month,
      monthly_budget_usd: budgeted ? amount(limit).usd : null,
      monthly_budget_nano_usd: budgeted ? limit.toString() : null,
      spent_usd: amount(spent).usd,
      spent_nano_usd: spent.toString(),
      remaining_usd: budgeted ? amount(remaining).usd : null,
      remaining_nano_usd: budgeted ? remaining.toString() : null,
    }
  }

  async function keyBudget(id: string) {
    const key = await ledger.budgets.key(id)
    if (!key) throw keyNotFound(id)
    return budgetView('key', key.userId, id, key.limitNano)
  }

  /** Database work of a route: a database that cannot answer is a 503, not a 500. */
  const fromDatabase = <T>(work: () => Promise<T>): Promise<T> =>
    work().catch((error: unknown) => {
      throw error instanceof ApiError ? error : ledger.unavailable(error)
    })

  return new Elysia({ name: 'tollgate/cost-admin', seed: ledger.id })
    .get('/costs/daily', ({ query }) => fromDatabase(() => ledger.reports.daily(range(query))), {
      query: RangeQuery,
      response: { 200: DailyReport, ...errors },
      detail: docs('System-wide cost per UTC day', 'Every day of the range, days without traffic as zeros.'),
    })
    .get('/costs/models', ({ query }) => fromDatabase(() => ledger.reports.models(range(query))), {
      query: RangeQuery,
      response: { 200: ModelsReport, ...errors },
      detail: docs('Cost per served model', 'Ordered by cost, highest first.'),
    })
    .get(
      '/costs/users/top',
      ({ query }) => fromDatabase(() => ledger.reports.topUsers(range(query), limit(query.limit))),
      {
        query: TopQuery,
        response: { 200: TopUsersReport, ...errors },
        detail: docs('Top users by cost'),
      },
    )
    .get(
      '/costs/users/:userId',
      ({ params, query }) => fromDatabase(() => ledger.reports.user(params.userId, range(query))),
      {
        params: UserParams,
        query: RangeQuery,
        response: { 200: UserReport, ...errors },
        detail: docs('One user’s cost per day and per model'),
      },
    )
    .get('/costs/ledger', () => ledgerStatsView(ledger), {
      response: { 200: LedgerStatsView, 401: Problem },
      detail: docs('The ledger writer: backlog, flushes, failures, drops'),
    })
    .get(
      '/users/:userId/budget',
      ({ params }) =>
        fromDatabase(async () =>
          budgetView('user', params.userId, null, await ledger.budgets.userLimit(params.userId)),
        ),
      {
        params: UserParams,
        response: { 200: BudgetView, ...errors },
        detail: docs('A user’s monthly budget and month-to-date spend'),
      },
    )
    .put(
      '/users/:userId/budget',
      ({ params, body }) =>
        fromDatabase(async () => {
          const nano = budgetOf(body.monthly_budget_usd)
          await ledger.budgets.setUser(params.userId, nano)
          return budgetView('user', params.userId, null, nano ?? 0n)
        }),
      {
        params: UserParams,
        body: BudgetBody,
        response: { 200: BudgetView, ...errors },
        detail: docs(
          'Set or remove a user’s monthly budget',
          'Covers every key of the user. Enforced at admission with the quota reservation; applies at once on this instance and within the budget refresh interval on the others.',
        ),
      },
    )
    .get('/keys/:id/budget', ({ params }) => fromDatabase(() => keyBudget(params.id)), {
      params: KeyParams,
      response: { 200: BudgetView, ...errors, 404: Problem },
      detail: docs('A key’s monthly budget and month-to-date spend'),
    })
    .put(
      '/keys/:id/budget',
      ({ params, body }) =>
        fromDatabase(async () => {
          const usd = budgetOf(body.monthly_budget_usd) === null ? null : body.monthly_budget_usd
          if (!(await ledger.budgets.setKey(params.id, usd))) throw keyNotFound(params.id)
          return keyBudget(params.id)
        }),
      {
        params: KeyParams,
        body: BudgetBody,
        response: { 200: BudgetView, ...errors, 404: Problem },
        detail: docs(
          'Set or remove a key’s monthly budget',
          'Stored in the key’s overrides as monthly_budget_usd. Enforced like the user budget; both apply when both are set.',
        ),
      },
    )
}

function ledgerStatsView(ledger: Ledger) {
  const stats = ledger.stats()
  return {
    backlog: stats.backlog,
    max_backlog: stats.maxBacklog,
    full: stats.full,
    overflow: stats.overflow,
    enqueued: stats.enqueued,
    written: stats.written,
    duplicates: stats.duplicates,
    flushes: stats.flushes,
    flush_failures: stats.flushFailures,
    consecutive_failures: stats.consecutiveFailures,
    last_flush_ms: stats.lastFlushMs,
    max_flush_ms: stats.maxFlushMs,
    last_failure: stats.lastFailure,
    dropped: stats.dropped,
    dropped_cost_nano_usd: stats.droppedCostNanoUsd.toString(),
    unwritten: stats.unwritten,
    oldest_pending_ms: stats.oldestPendingMs,
    budgets_loaded_at: stats.budgetsLoadedAt,
    budgets_error: stats.budgetsError,
  }
}
