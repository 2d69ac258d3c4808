/**
 * Cost reports. Every one of them reads `daily_usage` (never `usage_events`) through the
 * index that fits it: the system-wide reports (per day, per model, top users) select a day
 * range on `daily_usage_day_idx`, one user's report the primary key's (user_id, day) prefix.
 * Sums come back as text, so bigints cross both drivers without precision loss.
 */
import { and, asc, desc, eq, gte, lte, type SQL, sql } from 'drizzle-orm'
import type { Db } from '../../db/client'
import { dailyUsage } from '../../db/schema'
import { amount, dayMs, isoDay, parseDay } from './calendar'

export interface DayRange {
  from: string
  to: string
}

/** The figures every report row carries, as the wire contract spells them. */
export interface Figures {
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

interface SumRow {
  requests: string
  errors: string
  cache_hits: string
  prompt_tokens: string
  completion_tokens: string
  cost: string
  saved: string
}

const sums = {
  requests: sql<string>`sum(${dailyUsage.requests})::text`,
  errors: sql<string>`sum(${dailyUsage.errors})::text`,
  cache_hits: sql<string>`sum(${dailyUsage.cacheHits})::text`,
  prompt_tokens: sql<string>`sum(${dailyUsage.promptTokens})::text`,
  completion_tokens: sql<string>`sum(${dailyUsage.completionTokens})::text`,
  cost: sql<string>`sum(${dailyUsage.costNanoUsd})::text`,
  saved: sql<string>`sum(${dailyUsage.savedNanoUsd})::text`,
}
const costSum = sql`sum(${dailyUsage.costNanoUsd})`

function figures(row: SumRow | undefined): Figures {
  const cost = amount(BigInt(row?.cost ?? 0))
  const saved = amount(BigInt(row?.saved ?? 0))
  return {
    requests: Number(row?.requests ?? 0),
    errors: Number(row?.errors ?? 0),
    cache_hits: Number(row?.cache_hits ?? 0),
    prompt_tokens: Number(row?.prompt_tokens ?? 0),
    completion_tokens: Number(row?.completion_tokens ?? 0),
    cost_usd: cost.usd,
    cost_nano_usd: cost.nano_usd,
    saved_usd: saved.usd,
    saved_nano_usd: saved.nano_usd,
  }
}

/** Adds figures exactly (money as bigint), for totals computed from already-fetched rows. */
function total(rows: Figures[]): Figures {
  const add = (field: keyof SumRow & keyof Figures) => rows.reduce((sum, row) => sum + row[field], 0)
  return figures({
    requests: String(add('requests')),
    errors: String(add('errors')),
    cache_hits: String(add('cache_hits')),
    prompt_tokens: String(add('prompt_tokens')),
    completion_tokens: String(add('completion_tokens')),
    cost: rows.reduce((sum, row) => sum + BigInt(row.cost_nano_usd), 0n).toString(),
    saved: rows.reduce((sum, row) => sum + BigInt(row.saved_nano_usd), 0n).toString(),
  })
}

const inRange = ({ from, to }: DayRange): SQL => and(gte(dailyUsage.day, from), lte(dailyUsage.day, to))!

/** The report queries, unexecuted: the reports run them, and a test EXPLAINs them. */
export function reportQueries(db: Db, range: DayRange) {
  return {
    daily: db
      .select({ day: dailyUsage.day, ...sums })
      .from(dailyUsage)
      .where(inRange(range))
      .groupBy(dailyUsage.day)
      .orderBy(dailyUsage.day),
    models: db
      .select({ model: dailyUsage.model, ...sums })
      .from(dailyUsage)
      .where(inRange(range))
      .groupBy(dailyUsage.model)
      .orderBy(desc(costSum), dailyUsage.model),
    topUsers: (limit: number) =>
      db
        .select({ user_id: dailyUsage.userId, ...sums })
        .from(dailyUsage)
        .where(inRange(range))
        .groupBy(dailyUsage.userId)
        .orderBy(desc(costSum), dailyUsage.userId)
        .limit(limit),
    user: (userId: string) =>
      db
        .select({ day: dailyUsage.day, model: dailyUsage.model, ...sums })
        .from(dailyUsage)
        .where(and(eq(dailyUsage.userId, userId), inRange(range)))
        .groupBy(dailyUsage.day, dailyUsage.model)
        .orderBy(asc(dailyUsage.day), dailyUsage.model),
  }
}

export class CostReports {
  constructor(private readonly db: Db) {}

  /** Every day of the range, days without traffic as zeros, and the total. */
  async daily(range: DayRange) {
    const rows = await reportQueries(this.db, range).daily
    const byDay = new Map(rows.map((row) => [row.day, figures(row)]))
    const days: Array<{ day: string } & Figures> = []
    for (let ms = parseDay(range.from)!; ms <= parseDay(range.to)!; ms += dayMs) {
      const day = isoDay(ms)
      days.push({ day, ...(byDay.get(day) ?? figures(undefined)) })
    }
    return { ...range, days, total: total(days) }
  }

  async models(range: DayRange) {
    const rows = await reportQueries(this.db, range).models
    const models = rows.map((row) => ({ model: row.model, ...figures(row) }))
    return { ...range, models, total: total(models) }
  }

  async topUsers(range: DayRange, limit: number) {
    const rows = await reportQueries(this.db, range).topUsers(limit)
    return { ...range, limit, users: rows.map((row) => ({ user_id: row.user_id, ...figures(row) })) }
  }

  /** One user per day (with that day's models) and per model, and the total. */
  async user(userId: string, range: DayRange) {
    const rows = await reportQueries(this.db, range).user(userId)
    const days = new Map<string, Array<{ model: string } & Figures>>()
    const perModel = new Map<string, Figures[]>()
    for (const row of rows) {
      const entry = { model: row.model, ...figures(row) }
      days.set(row.day, [...(days.get(row.day) ?? []), entry])
      perModel.set(row.model, [...(perModel.get(row.model) ?? []), entry])
    }
    const models = [...perModel].map(([model, list]) => ({ model, ...total(list) }))
    return {
      user_id: userId,
      ...range,
      days: [...days].map(([day, list]) => ({ day, ...total(list), models: list })),
      models: models.sort(
        (a, b) => compareNano(b.cost_nano_usd, a.cost_nano_usd) || a.model.localeCompare(b.model),
      ),
      total: total(models),
    }
  }

  /** A user's settled spend today and this month to date (for /v1/usage). */
  async userSpend(
    userId: string,
    firstDay: string,
    today: string,
  ): Promise<{ today: bigint; month: bigint }> {
    const rows = await this.db
      .select({ day: dailyUsage.day, cost: sums.cost })
      .from(dailyUsage)
      .where(and(eq(dailyUsage.userId, userId), gte(dailyUsage.day, firstDay), lte(dailyUsage.day, today)))
      .groupBy(dailyUsage.day)
    let month = 0n
    let todayCost = 0n
    for (const row of rows) {
      month += BigInt(row.cost)
      if (row.day === today) todayCost = BigInt(row.cost)
    }
    return { today: todayCost, month }
  }
}

function compareNano(a: string, b: string): number {
  const difference = BigInt(a) - BigInt(b)
  return difference > 0n ? 1 : difference < 0n ? -1 : 0
}
