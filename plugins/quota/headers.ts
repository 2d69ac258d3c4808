/**
 * RateLimit headers: the IETF draft's `RateLimit-Policy` (every window) and `RateLimit`
 * (the tightest window: fewest remaining, then soonest reset), plus the older
 * `X-RateLimit-*` names for clients that read those.
 */
import type { Window } from './limits'

export interface WindowState {
  window: Window
  remaining: number
  resetMs: number
}

const seconds = (ms: number) => Math.max(0, Math.ceil(ms / 1000))

export function rateLimitHeaders(states: WindowState[]): Record<string, string> {
  const limited = states.filter((state) => state.window.limit > 0)
  if (limited.length === 0) return {}
  const tightest = limited.reduce((best, state) =>
    state.remaining < best.remaining || (state.remaining === best.remaining && state.resetMs < best.resetMs)
      ? state
      : best,
  )
  const name = tightest.window.name
  return {
    'ratelimit-policy': limited
      .map(({ window }) => `"${window.name}";q=${window.limit};w=${window.periodMs / 1000}`)
      .join(', '),
    ratelimit: `"${name}";r=${tightest.remaining};t=${seconds(tightest.resetMs)}`,
    'x-ratelimit-limit': String(tightest.window.limit),
    'x-ratelimit-remaining': String(tightest.remaining),
    'x-ratelimit-reset': String(seconds(tightest.resetMs)),
  }
}
