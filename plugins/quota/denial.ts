/**
 * What a reply of admit.lua means to a client: the windows it reports, the name of the limit
 * that denied (for metrics), and the 429 whose message names that limit and whose
 * Retry-After is exact for it.
 */

import type { MonthlyBudget } from '../exchange'
import { ApiError, formatUsd } from '../exchange'
import { rateLimitHeaders, type WindowState } from './headers'
import type { ScopeLimits } from './limits'
import type { AdmitReply } from './scripts'

export function windowStates(limits: ScopeLimits, reply: AdmitReply): WindowState[] {
  return limits.windows.map((window, i) => ({
    window,
    remaining: Number(reply[7 + i * 2]),
    resetMs: Number(reply[8 + i * 2]),
  }))
}

export function deniedLimitName(limits: ScopeLimits, deniedBy: string): string {
  const prefix = limits.scope === '{global}' ? 'global_' : ''
  if (deniedBy.startsWith('window:'))
    return `${prefix}requests_per_${limits.windows[Number(deniedBy.slice(7)) - 1]!.name}`
  if (deniedBy === 'tokens') return `${prefix}tokens_per_day`
  if (deniedBy === 'cost') return `${prefix}cost_per_day`
  if (deniedBy === 'month_cost') return 'monthly_budget'
  if (deniedBy === 'key_month_cost') return 'key_monthly_budget'
  return `${prefix}concurrent`
}

export function denial(
  limits: ScopeLimits,
  reply: AdmitReply,
  userWindows: WindowState[],
  budget: MonthlyBudget | null,
): ApiError {
  const deniedBy = reply[1]
  const retryAfter = String(Math.max(1, Math.ceil(reply[2] / 1000)))
  const headers = { ...rateLimitHeaders(userWindows), 'retry-after': retryAfter }
  if ((deniedBy === 'month_cost' || deniedBy === 'key_month_cost') && budget) {
    const [amount, whose] =
      deniedBy === 'month_cost'
        ? [budget.userLimitNano, 'this user (all keys)']
        : [budget.keyLimitNano, 'this API key']
    return new ApiError({
      status: 429,
      type: 'insufficient_quota',
      code: 'insufficient_quota',
      message: `Monthly budget exceeded: $${formatUsd(amount)} per month for ${whose}. It resets at 00:00 UTC on the 1st.`,
      headers,
    })
  }
  if (deniedBy === 'tokens' || deniedBy === 'cost') {
    const budget =
      deniedBy === 'tokens'
        ? `${limits.tokensPerDay} tokens per day`
        : `$${formatUsd(limits.costPerDayNano)} per day`
    return new ApiError({
      status: 429,
      type: 'insufficient_quota',
      code: 'insufficient_quota',
      message: `Budget exceeded: ${budget} for ${limits.label}. It resets at 00:00 UTC.`,
      headers,
    })
  }
  const what = deniedBy.startsWith('window:')
    ? (() => {
        const window = limits.windows[Number(deniedBy.slice(7)) - 1]!
        return `${window.limit} requests per ${window.name}`
      })()
    : `${limits.concurrent} concurrent requests`
  return new ApiError({
    status: 429,
    code: 'rate_limit_exceeded',
    message: `Rate limit exceeded: ${what} for ${limits.label}.`,
    headers,
  })
}
