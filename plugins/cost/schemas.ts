/**
 * TypeBox schemas of the cost admin API: query parameters, bodies and every answer. Money is
 * a 6-decimal USD string next to the exact integer nano-USD string, as DESIGN.md's
 * "Contracts" gives it.
 */
import { t } from 'elysia'

const dayPattern = '^\\d{4}-\\d{2}-\\d{2}$'
const Usd = t.String({ pattern: '^-?\\d+\\.\\d{6}$', description: 'USD, six decimals' })
const Nano = t.String({ pattern: '^-?\\d+$', description: 'integer nano-USD (1e-9 USD)' })
const Day = t.String({ pattern: dayPattern, description: 'UTC day, YYYY-MM-DD' })

export const userIdPattern = '^[A-Za-z0-9._@+:-]{1,128}$'
export const uuidPattern = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'

export const RangeQuery = t.Object({
  from: t.Optional(
    t.String({
      pattern: dayPattern,
      description: 'First UTC day (YYYY-MM-DD); default: the 1st of `to`’s month',
    }),
  ),
  to: t.Optional(t.String({ pattern: dayPattern, description: 'Last UTC day, inclusive; default: today' })),
})

export const TopQuery = t.Object({
  ...RangeQuery.properties,
  // The range is checked by the route: Elysia's query coercion drops the field's name from
  // a bound violation, and a 400 must name the parameter.
  limit: t.Optional(t.Integer({ description: 'How many users, 1 to 1000; default 10' })),
})

export const UserParams = t.Object({ userId: t.String({ pattern: userIdPattern }) })
export const KeyParams = t.Object({ id: t.String({ pattern: uuidPattern }) })

export const Figures = t.Object({
  requests: t.Integer(),
  errors: t.Integer(),
  cache_hits: t.Integer(),
  prompt_tokens: t.Integer(),
  completion_tokens: t.Integer(),
  cost_usd: Usd,
  cost_nano_usd: Nano,
  saved_usd: Usd,
  saved_nano_usd: Nano,
})

const withFigures = <P extends Parameters<typeof t.Object>[0]>(properties: P) =>
  t.Object({ ...properties, ...Figures.properties })

export const DailyReport = t.Object({
  from: Day,
  to: Day,
  days: t.Array(withFigures({ day: Day })),
  total: Figures,
})

export const ModelsReport = t.Object({
  from: Day,
  to: Day,
  models: t.Array(withFigures({ model: t.String() })),
  total: Figures,
})

export const TopUsersReport = t.Object({
  from: Day,
  to: Day,
  limit: t.Integer(),
  users: t.Array(withFigures({ user_id: t.String() })),
})

const ModelFigures = withFigures({ model: t.String() })

export const UserReport = t.Object({
  user_id: t.String(),
  from: Day,
  to: Day,
  days: t.Array(t.Object({ day: Day, ...Figures.properties, models: t.Array(ModelFigures) })),
  models: t.Array(ModelFigures),
  total: Figures,
})

export const BudgetBody = t.Object({
  monthly_budget_usd: t.Union([t.String({ pattern: '^\\d{1,12}(\\.\\d{1,9})?$' }), t.Null()], {
    description: 'USD per UTC calendar month, e.g. "25.00"; null removes the budget',
  }),
})

export const BudgetView = t.Object({
  scope: t.Union([t.Literal('user'), t.Literal('key')]),
  user_id: t.String(),
  key_id: t.Union([t.String(), t.Null()]),
  month: t.String({ description: 'UTC calendar month, YYYY-MM' }),
  monthly_budget_usd: t.Union([Usd, t.Null()]),
  monthly_budget_nano_usd: t.Union([Nano, t.Null()]),
  spent_usd: Usd,
  spent_nano_usd: Nano,
  remaining_usd: t.Union([Usd, t.Null()]),
  remaining_nano_usd: t.Union([Nano, t.Null()]),
})

export const LedgerStatsView = t.Object({
  backlog: t.Integer(),
  max_backlog: t.Integer(),
  full: t.Boolean(),
  overflow: t.Union([t.Literal('reject'), t.Literal('drop')]),
  enqueued: t.Integer(),
  written: t.Integer(),
  duplicates: t.Integer(),
  flushes: t.Integer(),
  flush_failures: t.Integer(),
  consecutive_failures: t.Integer(),
  last_flush_ms: t.Union([t.Number(), t.Null()]),
  max_flush_ms: t.Number(),
  last_failure: t.Union([t.Object({ at: t.String(), message: t.String() }), t.Null()]),
  dropped: t.Integer(),
  dropped_cost_nano_usd: Nano,
  unwritten: t.Integer(),
  oldest_pending_ms: t.Union([t.Number(), t.Null()]),
  budgets_loaded_at: t.Union([t.String(), t.Null()]),
  budgets_error: t.Union([t.String(), t.Null()]),
})

export { ProblemSchema as Problem } from '../exchange'
