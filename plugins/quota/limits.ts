/**
 * Effective limits of a request: its tier's, overridden per key, and the gateway's global
 * caps, turned into the argument lists of admit.lua and settle.lua.
 */
import { type MonthlyBudget, type Principal, usdToNano } from '../exchange'

export interface TierLimits {
  requests_per_minute: number | null
  requests_per_hour: number | null
  requests_per_day: number | null
  tokens_per_day: number | null
  cost_per_day_usd: number | null
  concurrent: number | null
}

export interface GlobalLimits {
  concurrent: number | null
  requests_per_hour: number | null
  cost_per_day_usd: number | null
}

export interface Window {
  /** The policy name in RateLimit headers. */
  name: 'minute' | 'hour' | 'day'
  periodMs: number
  /** 0 = unlimited. */
  limit: number
}

/** One scope's limits in the form the scripts take. */
export interface ScopeLimits {
  scope: string
  /** The tier name for messages, or 'global'. */
  label: string
  windows: Window[]
  tokensPerDay: number
  costPerDayNano: bigint
  concurrent: number
  /** The (period, limit) pairs of `windows` as the scripts take them, built once with the limits. */
  windowArgs: number[]
  /** The scope's hash and lease keys, in the order the scripts take them. */
  keys: [hash: string, leases: string]
}

const minute = 60_000
const hour = 60 * minute
const day = 24 * hour

const orZero = (value: number | null | undefined) => value ?? 0

function scopeLimits(limits: Omit<ScopeLimits, 'windowArgs' | 'keys'>): ScopeLimits {
  return {
    ...limits,
    windowArgs: limits.windows.flatMap((window) => [window.periodMs, window.limit]),
    keys: [`${limits.scope}:q`, `${limits.scope}:leases`],
  }
}

export function userLimits(principal: Principal, tiers: Record<string, TierLimits>): ScopeLimits {
  const tier = tiers[principal.tier]
  if (!tier) throw new Error(`key ${principal.keyId} has tier "${principal.tier}", which is not configured`)
  const limits = { ...tier, ...(principal.overrides as Partial<TierLimits>) }
  return scopeLimits({
    scope: `{u:${encodeURIComponent(principal.userId)}}`,
    label: `tier ${principal.tier}`,
    windows: [
      { name: 'minute', periodMs: minute, limit: orZero(limits.requests_per_minute) },
      { name: 'hour', periodMs: hour, limit: orZero(limits.requests_per_hour) },
      { name: 'day', periodMs: day, limit: orZero(limits.requests_per_day) },
    ],
    tokensPerDay: orZero(limits.tokens_per_day),
    costPerDayNano: usdToNano(orZero(limits.cost_per_day_usd)),
    concurrent: orZero(limits.concurrent),
  })
}

export function globalLimits(limits: GlobalLimits): ScopeLimits {
  return scopeLimits({
    scope: '{global}',
    label: 'the gateway',
    windows: [{ name: 'hour', periodMs: hour, limit: orZero(limits.requests_per_hour) }],
    tokensPerDay: 0,
    costPerDayNano: usdToNano(orZero(limits.cost_per_day_usd)),
    concurrent: orZero(limits.concurrent),
  })
}

/** What a user-scope reservation holds on the monthly counters, for settlement. */
export interface MonthReservation {
  /** yyyymm of the reservation, so a request crossing month-end settles into its own month. */
  month: number
  keyId: string
  user: boolean
  key: boolean
  reserveNano: bigint
}

/** The month section of admit.lua's arguments. */
export function monthAdmitArgs(keyId: string, budget: MonthlyBudget, reserveNano: bigint): string[] {
  const budgeted = budget.userLimitNano > 0n || budget.keyLimitNano > 0n
  return [
    'month',
    keyId,
    budget.userLimitNano.toString(),
    budget.keyLimitNano.toString(),
    budgeted ? reserveNano.toString() : '0',
    budget.userSeedNano.toString(),
    budget.keySeedNano.toString(),
  ]
}

/** The month section of settle.lua's arguments: actual cost replaces the reservation. */
export function monthSettleArgs(reservation: MonthReservation, actualNano: bigint): Array<string | number> {
  const delta = (actualNano - reservation.reserveNano).toString()
  return [
    'month',
    reservation.month,
    reservation.keyId,
    reservation.user ? delta : '0',
    reservation.key ? delta : '0',
  ]
}

/** The month fields admit.lua appends after the windows of a reply with a month section. */
export function monthReply(
  limits: ScopeLimits,
  reply: readonly unknown[],
): { month: number; userUsedNano: bigint; keyUsedNano: bigint } | null {
  const at = 7 + limits.windows.length * 2
  if (reply.length < at + 3) return null
  const nano = (value: unknown) => BigInt(Math.round(Number(value)))
  return { month: Number(reply[at]), userUsedNano: nano(reply[at + 1]), keyUsedNano: nano(reply[at + 2]) }
}
