/**
 * What a breaker looks like from outside: its state, the failures and calls in its window,
 * when it last failed and when it lets the next probe through. Read from a target's hash
 * (see record.lua) without touching the store, for the admin routes, health and metrics.
 */
import type { BreakerPolicy } from './policy'
import { WINDOW_BUCKETS } from './policy'
import { type Fields, num, windowTotals } from './scripts'

export type BreakerState = 'closed' | 'open' | 'half_open'

const states: BreakerState[] = ['closed', 'open', 'half_open']

export interface BreakerView {
  target: string
  state: BreakerState
  /** Failures within the rolling window. */
  failures: number
  /** Calls (failed or not) within the rolling window. */
  calls: number
  /** Epoch ms of the last failure, if any is remembered. */
  lastFailureAt: number | null
  /** What the last failure was (`http 503`, `connection`, `timeout:ttft`...). */
  lastFailure: string | null
  /** Epoch ms the breaker last opened, while it is not closed. */
  openedAt: number | null
  /**
   * Epoch ms from which a call may get through again: the end of the cool-down while open,
   * the expiry of the probe slots while half-open and full; null while calls pass.
   */
  nextProbeAt: number | null
  /** The cool-down of the current (or last) open period. */
  cooldownMs: number
  probesInFlight: number
  /** Successful probes since the breaker became half-open. */
  halfOpenSuccesses: number
}

export function stateOf(fields: Fields | undefined): BreakerState {
  return states[fields ? num(fields, 'state') : 0] ?? 'closed'
}

export function viewOf(target: string, fields: Fields, policy: BreakerPolicy, now: number): BreakerView {
  const state = stateOf(fields)
  const current = Math.floor(now / (policy.windowMs / WINDOW_BUCKETS))
  const { calls, failures } = windowTotals(fields, current, WINDOW_BUCKETS)
  const probes = num(fields, 'probes')
  const probeUntil = num(fields, 'probe_until')
  const slotsFull = state === 'half_open' && probes >= policy.halfOpenMaxProbes && probeUntil > now
  return {
    target,
    state,
    failures,
    calls,
    lastFailureAt: fields.failure_at === undefined ? null : num(fields, 'failure_at'),
    lastFailure: fields.failure === undefined ? null : String(fields.failure),
    openedAt: state === 'closed' ? null : num(fields, 'opened_at'),
    nextProbeAt: state === 'open' ? num(fields, 'open_until') : slotsFull ? probeUntil : null,
    cooldownMs: num(fields, 'cooldown') || policy.cooldownMs,
    probesInFlight: state === 'half_open' ? probes : 0,
    halfOpenSuccesses: state === 'half_open' ? num(fields, 'successes') : 0,
  }
}
