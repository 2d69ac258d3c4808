/**
 * Monthly budgets: per user (`user_budgets`) and per key (`api_keys.overrides.monthly_budget_usd`).
 * They are enforced by the quota plugin's cost reservation in Redis, so concurrent requests
 * on any number of instances cannot overshoot them; this book only says what the limits are.
 *
 * The book is held in memory and re-read in the background every `refreshMs`, so admission
 * reads no database. A change made through the admin API applies at once on the instance that
 * made it and within `refreshMs` everywhere else (the same kind of bound as key revocation).
 * With the limits the book carries each budgeted user's and key's month-to-date spend from
 * the ledger: the quota script starts a missing monthly counter from it, so a budget set in
 * mid-month, or a Redis that lost its data, still counts what was already spent.
 */
import { and, eq, gte, inArray, sql } from 'drizzle-orm'
import type { Db } from '../../db/client'
import { apiKeys, dailyUsage, usageEvents, userBudgets } from '../../db/schema'
import { type MonthlyBudget, type Principal, usdToNano } from '../exchange'
import { dayMs, monthOf, parseUsd } from './calendar'

/** The override field of a key's monthly budget: a decimal USD string (or a number). */
const keyBudgetField = 'monthly_budget_usd'

export function keyBudgetOf(overrides: Record<string, unknown>): bigint {
  const value = overrides[keyBudgetField]
  if (typeof value === 'number' && Number.isFinite(value) && value > 0) return usdToNano(value)
  if (typeof value === 'string') return parseUsd(value) ?? 0n
  return 0n
}

const none: MonthlyBudget = { userLimitNano: 0n, userSeedNano: 0n, keyLimitNano: 0n, keySeedNano: 0n }

interface Snapshot {
  users: Map<string, bigint>
  keys: Map<string, bigint>
  userSpent: Map<string, bigint>
  keySpent: Map<string, bigint>
  /** The seeds are for the month that ends here (epoch ms); after it they are zero. */
  monthEndsAt: number
}

export class BudgetBook {
  private snapshot: Snapshot = {
    users: new Map(),
    keys: new Map(),
    userSpent: new Map(),
    keySpent: new Map(),
    monthEndsAt: 0,
  }
  private timer: ReturnType<typeof setInterval> | null = null
  /** Refreshes started and applied: a slow older one must not overwrite a newer one's book. */
  private started = 0
  private applied = 0
  /** When the book was last read in full, or null before the first success. */
  loadedAt: Date | null = null
  lastError: string | null = null
  /** Settles when the first read has succeeded or failed; admission waits for it once. */
  firstLoad: Promise<void> = Promise.resolve()

  constructor(
    private readonly db: Db,
    private readonly refreshMs: number,
    private readonly now: () => number,
    private readonly onError: (error: unknown) => void,
  ) {}

  start(): Promise<void> {
    this.timer ??= setInterval(() => void this.refresh(), this.refreshMs)
    this.timer.unref?.()
    this.firstLoad = this.refresh()
    return this.firstLoad
  }

  /**
   * Whether the book has been read. Until then budgets are unknown, and admission is told
   * nothing about them (rather than "none"), so their counters in Redis stay as they are.
   */
  get known(): boolean {
    return this.loadedAt !== null
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  of(principal: Principal): MonthlyBudget {
    const { users, keys, userSpent, keySpent, monthEndsAt } = this.snapshot
    const userLimitNano = users.get(principal.userId) ?? 0n
    const keyLimitNano = keys.get(principal.keyId) ?? 0n
    if (userLimitNano === 0n && keyLimitNano === 0n) return none
    const current = this.now() < monthEndsAt
    return {
      userLimitNano,
      userSeedNano: current ? (userSpent.get(principal.userId) ?? 0n) : 0n,
      keyLimitNano,
      keySeedNano: current ? (keySpent.get(principal.keyId) ?? 0n) : 0n,
    }
  }

  /** Re-reads every budget and the month-to-date spend of the budgeted users and keys. */
  async refresh(): Promise<void> {
    const generation = ++this.started
    try {
      const nowMs = this.now()
      const month = monthOf(nowMs)
      const users = new Map<string, bigint>()
      for (const row of await this.db.select().from(userBudgets))
        users.set(row.userId, row.monthlyBudgetNanoUsd)
      const keys = new Map<string, bigint>()
      const keyRows = await this.db
        .select({ id: apiKeys.id, overrides: apiKeys.overrides })
        .from(apiKeys)
        .where(
          and(sql`${apiKeys.revokedAt} is null`, sql`${apiKeys.overrides} ->> ${keyBudgetField} is not null`),
        )
      for (const row of keyRows) {
        const limit = keyBudgetOf(row.overrides)
        if (limit > 0n) keys.set(row.id, limit)
      }
      const userSpent = await this.userSpent([...users.keys()], month.firstDay)
      const keySpent = await this.keySpent([...keys.keys()], month.firstDay)
      if (generation < this.applied) return
      this.applied = generation
      this.snapshot = {
        users,
        keys,
        userSpent,
        keySpent,
        monthEndsAt: Date.parse(month.firstDay) + month.daysInMonth * dayMs,
      }
      this.loadedAt = new Date(nowMs)
      this.lastError = null
    } catch (error) {
      this.lastError = (error as Error).message
      this.onError(error)
    }
  }

  /** Month-to-date ledger spend per user, from the rollup. */
  async userSpent(userIds: string[], firstDay: string): Promise<Map<string, bigint>> {
    if (userIds.length === 0) return new Map()
    const rows = await this.db
      .select({ id: dailyUsage.userId, nano: sql<string>`sum(${dailyUsage.costNanoUsd})::text` })
      .from(dailyUsage)
      .where(and(inArray(dailyUsage.userId, userIds), gte(dailyUsage.day, firstDay)))
      .groupBy(dailyUsage.userId)
    return new Map(rows.map((row) => [row.id, BigInt(row.nano)]))
  }

  /** Month-to-date ledger spend per key, from the events (indexed by key and time). */
  async keySpent(keyIds: string[], firstDay: string): Promise<Map<string, bigint>> {
    if (keyIds.length === 0) return new Map()
    const rows = await this.db
      .select({ id: usageEvents.keyId, nano: sql<string>`sum(${usageEvents.costNanoUsd})::text` })
      .from(usageEvents)
      .where(and(inArray(usageEvents.keyId, keyIds), gte(usageEvents.startedAt, new Date(firstDay))))
      .groupBy(usageEvents.keyId)
    return new Map(rows.map((row) => [row.id, BigInt(row.nano)]))
  }

  /** A key's user and budget, or null when there is no such key. */
  async key(keyId: string): Promise<{ userId: string; limitNano: bigint } | null> {
    const [row] = await this.db
      .select({ userId: apiKeys.userId, overrides: apiKeys.overrides })
      .from(apiKeys)
      .where(eq(apiKeys.id, keyId))
    return row ? { userId: row.userId, limitNano: keyBudgetOf(row.overrides) } : null
  }

  async userLimit(userId: string): Promise<bigint> {
    const [row] = await this.db.select().from(userBudgets).where(eq(userBudgets.userId, userId))
    return row?.monthlyBudgetNanoUsd ?? 0n
  }

  /** Sets (or with null clears) a user's budget, here at once and elsewhere within `refreshMs`. */
  async setUser(userId: string, nano: bigint | null): Promise<void> {
    if (nano === null) await this.db.delete(userBudgets).where(eq(userBudgets.userId, userId))
    else
      await this.db
        .insert(userBudgets)
        .values({ userId, monthlyBudgetNanoUsd: nano })
        .onConflictDoUpdate({
          target: userBudgets.userId,
          set: { monthlyBudgetNanoUsd: nano, updatedAt: sql`now()` },
        })
    await this.refresh()
  }

  /** Sets (or clears) a key's budget; returns the key's user, or null when there is no such key. */
  async setKey(keyId: string, usd: string | null): Promise<{ userId: string } | null> {
    const overrides =
      usd === null
        ? sql`${apiKeys.overrides} - ${keyBudgetField}::text`
        : sql`${apiKeys.overrides} || jsonb_build_object(${keyBudgetField}::text, ${usd}::text)`
    const [row] = await this.db
      .update(apiKeys)
      .set({ overrides })
      .where(eq(apiKeys.id, keyId))
      .returning({ userId: apiKeys.userId })
    if (row) await this.refresh()
    return row ?? null
  }
}
