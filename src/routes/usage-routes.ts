/**
 * What a caller has used and has left: every request window (limit, used, remaining,
 * reset), today's tokens and cost against their budgets, and concurrency; and from the cost
 * ledger, what the user spent today and this month with the month-end projection. The same
 * view for any key under /admin, and a reset of a key's limits.
 */
import { Elysia, t } from 'elysia'
import type { ApiKeys, auth } from '../../plugins/auth'
import { amount, type Ledger, type MonthView, monthOf, projectMonth } from '../../plugins/cost'
import {
  ApiError,
  type exchange as exchangePlugin,
  formatUsd,
  type MonthlyBudget,
  OpenAIErrorSchema as OpenAIError,
  type Principal,
  ProblemSchema as Problem,
} from '../../plugins/exchange'
import type { QuotaService, ScopeUsage } from '../../plugins/quota'

export interface UsageRoutesOptions {
  spine: ReturnType<typeof exchangePlugin>
  auth: ReturnType<typeof auth>
  keys: ApiKeys
  admission: QuotaService
  /** The cost ledger, for spend today, month to date and the projection. */
  ledger: Ledger
}

const Limit = t.Union([t.Integer(), t.Null()], { description: 'null: unlimited' })
const WindowView = t.Object({
  window: t.String(),
  limit: Limit,
  used: t.Union([t.Integer(), t.Null()]),
  remaining: t.Union([t.Integer(), t.Null()]),
  reset_seconds: t.Integer(),
  reset_at: t.String({ format: 'date-time' }),
})
const BudgetState = t.Union([
  t.Object({
    limit_usd: t.String(),
    limit_nano_usd: t.String(),
    used_usd: t.String(),
    used_nano_usd: t.String(),
    remaining_usd: t.String(),
    remaining_nano_usd: t.String(),
  }),
  t.Null(),
])
const UsageView = t.Object({
  user_id: t.String(),
  tier: t.String(),
  windows: t.Array(WindowView),
  tokens_today: t.Object({ used: t.Integer(), limit: Limit }),
  cost_today: t.Object({
    used_usd: t.String(),
    used_nano_usd: t.String(),
    limit_usd: t.Union([t.String(), t.Null()]),
  }),
  concurrent: t.Object({ active: t.Integer(), limit: Limit }),
  spend: t.Union(
    [
      t.Object({
        source: t.Literal('ledger'),
        month: t.String({ description: 'UTC calendar month, YYYY-MM' }),
        today_usd: t.String(),
        today_nano_usd: t.String(),
        month_to_date_usd: t.String(),
        month_to_date_nano_usd: t.String(),
        projected_month_usd: t.String(),
        projected_month_nano_usd: t.String(),
        projection_method: t.Literal('month_to_date / elapsed_days * days_in_month'),
        elapsed_days: t.Integer({ description: 'Days of the month so far, today included' }),
        days_in_month: t.Integer(),
      }),
      t.Null(),
    ],
    {
      description:
        "The user's settled spend (every key of the user) per the cost ledger; a request appears once its batch is written (within the flush interval). null while the database cannot answer.",
    },
  ),
  monthly_budget: t.Object(
    { month: t.String(), user: BudgetState, key: BudgetState },
    {
      description:
        'Monthly budgets (UTC calendar month) of the user and of this key, as enforced at admission: used includes requests in flight. null: no budget.',
    },
  ),
})
const KeyId = t.Object({ id: t.String({ format: 'uuid' }) })

/** How long /v1/usage waits for the ledger's figures before answering without them. */
const spendTimeoutMs = 1_000

async function spendView(ledger: Ledger, userId: string, month: MonthView) {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), spendTimeoutMs)
  })
  // The quota figures come from Redis; a database that cannot answer must not take them down.
  const spent = await Promise.race([
    ledger.reports.userSpend(userId, month.firstDay, month.today).catch(() => null),
    timeout,
  ]).finally(() => clearTimeout(timer))
  if (spent === null) return null
  const today = amount(spent.today)
  const toDate = amount(spent.month)
  const projected = amount(projectMonth(spent.month, month))
  return {
    source: 'ledger' as const,
    month: month.month,
    today_usd: today.usd,
    today_nano_usd: today.nano_usd,
    month_to_date_usd: toDate.usd,
    month_to_date_nano_usd: toDate.nano_usd,
    projected_month_usd: projected.usd,
    projected_month_nano_usd: projected.nano_usd,
    projection_method: 'month_to_date / elapsed_days * days_in_month' as const,
    elapsed_days: month.elapsedDays,
    days_in_month: month.daysInMonth,
  }
}

function budgetState(limit: bigint, used: bigint) {
  if (limit <= 0n) return null
  const remaining = limit > used ? limit - used : 0n
  return {
    limit_usd: formatUsd(limit),
    limit_nano_usd: limit.toString(),
    used_usd: formatUsd(used),
    used_nano_usd: used.toString(),
    remaining_usd: formatUsd(remaining),
    remaining_nano_usd: remaining.toString(),
  }
}

async function usageView(principal: Principal, usage: ScopeUsage, ledger: Ledger, budget: MonthlyBudget) {
  const now = Date.now()
  const month = monthOf(now)
  return {
    user_id: principal.userId,
    tier: principal.tier,
    windows: usage.windows.map(({ window, remaining, resetMs }) => {
      const limited = window.limit > 0
      return {
        window: window.name,
        limit: limited ? window.limit : null,
        used: limited ? window.limit - remaining : null,
        remaining: limited ? remaining : null,
        reset_seconds: Math.ceil(resetMs / 1000),
        reset_at: new Date(now + resetMs).toISOString(),
      }
    }),
    tokens_today: { used: usage.tokensUsed, limit: usage.limits.tokensPerDay || null },
    cost_today: {
      used_usd: formatUsd(usage.costUsedNano),
      used_nano_usd: usage.costUsedNano.toString(),
      limit_usd: usage.limits.costPerDayNano > 0n ? formatUsd(usage.limits.costPerDayNano) : null,
    },
    concurrent: { active: usage.concurrentUsed, limit: usage.limits.concurrent || null },
    spend: await spendView(ledger, principal.userId, month),
    monthly_budget: {
      month: month.month,
      user: budgetState(budget.userLimitNano, usage.month?.userUsedNano ?? budget.userSeedNano),
      key: budgetState(budget.keyLimitNano, usage.month?.keyUsedNano ?? budget.keySeedNano),
    },
  }
}

export function usageRoutes({ spine, auth, keys, admission, ledger }: UsageRoutesOptions) {
  async function principalOfKey(id: string): Promise<Principal> {
    const record = await keys.get(id)
    if (!record) throw new ApiError({ status: 404, message: `No key with id ${id}.`, code: 'key_not_found' })
    return { keyId: record.id, userId: record.userId, tier: record.tier, overrides: record.overrides }
  }

  async function usageOf(principal: Principal) {
    const budget = ledger.budgets.of(principal)
    return usageView(principal, await admission.usage(principal, budget), ledger, budget)
  }

  return new Elysia({ name: 'tollgate/routes/usage' })
    .use(spine)
    .use(auth)
    .get(
      '/v1/usage',
      async function callerUsage({ principal }) {
        return usageOf(principal)
      },
      {
        apiKey: true,
        response: { 200: UsageView, 401: OpenAIError },
        detail: {
          summary: "The caller's quotas, tokens, cost today and this month, projection and budgets",
          tags: ['usage'],
        },
      },
    )
    .get(
      '/admin/keys/:id/usage',
      async function keyUsage({ params }) {
        const principal = await principalOfKey(params.id)
        return usageOf(principal)
      },
      {
        admin: true,
        params: KeyId,
        response: { 200: UsageView, 400: Problem, 401: Problem, 404: Problem },
        detail: { summary: "A key's quotas, tokens and cost today", tags: ['keys'] },
      },
    )
    .post(
      '/admin/keys/:id/reset-limits',
      async function resetKeyLimits({ params }) {
        const principal = await principalOfKey(params.id)
        const cleared = await admission.reset(principal)
        return {
          key_id: principal.keyId,
          user_id: principal.userId,
          cleared: [
            'requests_per_minute',
            'requests_per_hour',
            'requests_per_day',
            'tokens_per_day',
            'cost_per_day',
            'concurrent',
          ],
          stores: cleared,
        }
      },
      {
        admin: true,
        params: KeyId,
        response: {
          200: t.Object({
            key_id: t.String(),
            user_id: t.String(),
            cleared: t.Array(t.String()),
            stores: t.Array(t.String()),
          }),
          400: Problem,
          401: Problem,
          404: Problem,
        },
        detail: {
          summary: "Clear a key's user windows, budgets and leases",
          description: 'Limits are per user: this clears them for every key of the same user.',
          tags: ['keys'],
        },
      },
    )
}
