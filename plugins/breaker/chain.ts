/**
 * A fallback chain: targets tried in order, each under the guard, sharing one deadline.
 * A target whose breaker is open is skipped without a call; one whose attempts are
 * exhausted hands over to the next. A failure that is not the upstream's fault (the request
 * was refused, or the caller's own code failed) ends the chain at once, since the next
 * target would do no better. Targets are opaque here, as everywhere in this plugin.
 */
import type { GuardCall } from './guard'
import type { BreakerService, Permit } from './service'
import type { CallTimer } from './timeouts'

export type ChainStep<T> = Omit<GuardCall<T>, 'deadline' | 'signal'>

export type ChainOutcome<T> =
  /** Step `step` (0 = the first) served; its permit and timer are the caller's to settle. */
  | { ok: true; step: number; attempts: number; value: T; permit: Permit; timer: CallTimer }
  /** The client went away. */
  | { ok: false; stop: 'cancelled'; attempts: number }
  /** A failure that is not the upstream's: surface `error` as it is. */
  | { ok: false; stop: 'refused'; attempts: number; error: unknown }
  /**
   * Every target failed or was open. `timedOut` when time ran out anywhere on the way;
   * `retryAt` is the earliest moment (epoch ms) any target may take calls again.
   */
  | { ok: false; stop: 'exhausted'; attempts: number; timedOut: boolean; retryAt: number }

/** When a target may take calls again, if the upstream named no time and its breaker is closed. */
const DEFAULT_RETRY_MS = 1000

export async function runChain<T>(
  service: BreakerService,
  steps: ChainStep<T>[],
  deadline: number,
  signal: AbortSignal,
): Promise<ChainOutcome<T>> {
  let attempts = 0
  let timedOut = false
  let retryAt = Number.POSITIVE_INFINITY
  for (const [step, call] of steps.entries()) {
    const result = await service.guard({ ...call, deadline, signal })
    attempts += result.attempts
    if (result.ok) return { ...result, step, attempts }
    if (signal.aborted) return { ok: false, stop: 'cancelled', attempts }
    if (result.stop === 'failed' && result.failure.verdict !== 'failure')
      return { ok: false, stop: 'refused', attempts, error: result.failure.error }
    const { failure } = result
    timedOut ||= result.timedOut
    const reopensAt =
      result.stop === 'open'
        ? result.retryAt
        : (service.view(call.target).nextProbeAt ??
          service.now() + (failure?.retryAfterMs ?? DEFAULT_RETRY_MS))
    retryAt = Math.min(retryAt, reopensAt)
    if (result.stop === 'deadline') break
  }
  return { ok: false, stop: 'exhausted', attempts, timedOut, retryAt }
}
