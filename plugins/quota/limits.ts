/**
 * Effective limits of a request: its tier's, overridden per key, and the gateway's global
 * caps, turned into the argument lists of admit.lua and settle.lua.
 */
import { type Principal, usdToNano } from '../exchange'

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
}

const minute = 60_000
const hour = 60 * minute
const day = 24 * hour

const orZero = (value: number | null | undefined) => value ?? 0

export function userLimits(principal: Principal, tiers: Record<string, TierLimits>): ScopeLimits {
  const tier = tiers[principal.tier]
  if (!tier) throw new Error(`key ${principal.keyId} has tier "${principal.tier}", which is not configured`)
  const limits = { ...tier, ...(principal.overrides as Partial<TierLimits>) }
  return {
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
  }
}

export function globalLimits(limits: GlobalLimits): ScopeLimits {
  return {
    scope: '{global}',
    label: 'the gateway',
    windows: [{ name: 'hour', periodMs: hour, limit: orZero(limits.requests_per_hour) }],
    tokensPerDay: 0,
    costPerDayNano: usdToNano(orZero(limits.cost_per_day_usd)),
    concurrent: orZero(limits.concurrent),
  }
}

export function windowArgs(limits: ScopeLimits): number[] {
  return limits.windows.flatMap((window) => [window.periodMs, window.limit])
}

export const hashKey = (limits: ScopeLimits) => `${limits.scope}:q`
export const leaseKey = (limits: ScopeLimits) => `${limits.scope}:leases`
