/**
 * The guard every upstream call runs in: the breaker's leave before each attempt, the
 * attempt's time limits, and retries of retryable failures with full-jitter exponential
 * backoff that honours the upstream's Retry-After (up to a cap) and never runs past the
 * request's deadline. It knows nothing of providers: the caller says what an error means.
 *
 * The guarded operation ends at the retry boundary: for a JSON answer, the answer; for a
 * stream, the first chunk, since nothing is retried once bytes went to the client. A stream
 * stays under guard after that through `guardStream`, which applies the idle and total
 * limits and gives the breaker its verdict when the stream ends.
 */
import type { RetryPolicy, TimeoutLimits } from './policy'
import type { BreakerService, Permit, Verdict } from './service'
import { CallTimer } from './timeouts'

/** What the caller makes of an error: the guard acts on this, never on the error itself. */
export interface FailureInfo {
  /** `failure` counts against the breaker; `success` means the upstream is up (it refused the request). */
  verdict: Verdict
  /** Whether another attempt may succeed. */
  retryable: boolean
  /** The upstream's Retry-After, in ms. */
  retryAfterMs: number | null
  /** For operators: `http 503`, `connection`, `timeout:ttft`... */
  reason: string
  /** What to surface (a caller may turn a timer's abort into its own timeout error). */
  error: unknown
}

export interface GuardCall<T> {
  target: string
  retry: RetryPolicy
  /** Limits of each attempt; `totalMs` is further cut to what is left before `deadline`. */
  timeouts: TimeoutLimits
  /** Epoch ms (on the service's clock) after which no attempt starts and none runs on. */
  deadline: number
  /** The client's signal: once it aborts nothing more is attempted. */
  signal: AbortSignal
  /** One attempt; it must hand `timer.signal` to the upstream and await through `timer.watch`. */
  attempt(timer: CallTimer, attempt: number): Promise<T>
  classify(error: unknown, timer: CallTimer): FailureInfo
}

/** Common to every way a guarded call can fail. */
interface Unserved {
  ok: false
  attempts: number
  /** Whether any attempt ran out of time. */
  timedOut: boolean
}

export type GuardResult<T> =
  /** The permit and timer stay open: settle the permit and call `timer.done()` when the call ends. */
  | { ok: true; value: T; attempts: number; permit: Permit; timer: CallTimer }
  /** The breaker refused (before the first attempt or a retry). */
  | (Unserved & { stop: 'open'; retryAt: number; failure: FailureInfo | null })
  /** The last attempt failed and no retry is allowed. */
  | (Unserved & { stop: 'failed'; failure: FailureInfo })
  /** No time was left for an attempt. */
  | (Unserved & { stop: 'deadline'; failure: FailureInfo | null })

/** The wait before retry number `retry` (1-based), or null when the target asks for longer than we wait. */
export function backoffMs(
  retry: number,
  policy: RetryPolicy,
  retryAfterMs: number | null,
  random: () => number,
) {
  if (retryAfterMs !== null && retryAfterMs > policy.retryAfterCapMs) return null
  const jitter = random() * Math.min(policy.backoffCapMs, policy.backoffBaseMs * 2 ** (retry - 1))
  return Math.max(jitter, retryAfterMs ?? 0)
}

export async function runGuarded<T>(service: BreakerService, call: GuardCall<T>): Promise<GuardResult<T>> {
  const { now, sleep, random } = service.options
  const { metrics } = service
  let failure: FailureInfo | null = null
  let timedOut = false
  for (let attempts = 0; ; ) {
    const remaining = call.deadline - now()
    if (remaining <= 0) return { ok: false, stop: 'deadline', attempts, timedOut: true, failure }
    const admission = await service.admit(call.target, remaining)
    if (!admission.allowed)
      return { ok: false, stop: 'open', attempts, timedOut, retryAt: admission.retryAt, failure }
    attempts++
    const totalMs = call.timeouts.totalMs > 0 ? Math.min(call.timeouts.totalMs, remaining) : remaining
    const timer = new CallTimer({ ...call.timeouts, totalMs }, call.signal)
    try {
      const value = await call.attempt(timer, attempts)
      return { ok: true, value, attempts, permit: admission.permit, timer }
    } catch (error) {
      failure = call.classify(error, timer)
      timer.abort()
      if (timer.expired) {
        timedOut = true
        metrics.emit({ type: 'timeout', target: call.target, kind: timer.expired })
      }
      admission.permit.settle(failure.verdict, failure.reason)
    }
    const failed = { ok: false, stop: 'failed', attempts, timedOut, failure } as const
    if (failure.verdict === 'neutral' || !failure.retryable || attempts > call.retry.maxRetries) return failed
    const delay = backoffMs(attempts, call.retry, failure.retryAfterMs, random)
    if (delay === null || now() + delay >= call.deadline) return failed
    metrics.emit({ type: 'retry', target: call.target, attempt: attempts + 1, delayMs: delay })
    await sleep(delay, call.signal)
    if (call.signal.aborted) return failed
  }
}

export interface HeldStream<T> {
  target: string
  permit: Permit
  timer: CallTimer
  first: IteratorResult<T>
  /** Called once, when the stream ends, with the breaker's verdict (for tracing). */
  onEnd?: (verdict: Verdict, reason: string) => void
}

/**
 * Keeps a stream that got its first chunk under guard until it ends: each next chunk within
 * the idle limit, the whole within the total; the breaker hears success when the stream
 * completes, failure when it breaks off, nothing when the client leaves.
 */
export function guardStream<T>(
  service: BreakerService,
  held: HeldStream<T>,
  iterator: AsyncIterator<T>,
  classify: (error: unknown, timer: CallTimer) => FailureInfo,
): AsyncIterator<T> {
  const { target, permit, timer } = held
  let ended = false
  const end = (verdict: Verdict, reason = '') => {
    timer.done()
    if (ended) return
    ended = true
    permit.settle(verdict, reason)
    held.onEnd?.(verdict, reason)
  }
  if (held.first.done) end('success')
  return {
    async next() {
      try {
        const step = await timer.watch(iterator.next())
        if (step.done) end('success')
        return step
      } catch (error) {
        const failure = classify(error, timer)
        timer.abort()
        if (timer.expired) service.metrics.emit({ type: 'timeout', target, kind: timer.expired })
        end(failure.verdict, failure.reason)
        throw failure.error
      }
    },
    async return(value?: unknown) {
      end('neutral')
      timer.abort()
      return (await iterator.return?.(value)) ?? { done: true, value: undefined }
    },
  }
}
