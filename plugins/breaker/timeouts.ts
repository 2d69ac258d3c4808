/**
 * The four time limits of one upstream attempt: connect (until the response headers), time
 * to first token, idle gap between stream chunks, and total. Every limit that fires aborts
 * the attempt's AbortSignal, which the caller hands to the upstream, so a timeout closes the
 * socket instead of leaving it to finish unobserved; and every step a caller awaits through
 * the timer rejects at once, even if the upstream were slow to notice the abort.
 *
 * It runs on every upstream call, so it is cheap: one AbortController (tied to the parent
 * by a listener, not AbortSignal.any) and at most one setTimeout, armed for the earliest
 * limit. Moving a limit later (the idle limit, re-armed for every chunk) touches no timer:
 * a timer that fires before anything is due is simply armed again for what is due next.
 */
import type { TimeoutLimits } from './policy'

export type TimeoutKind = 'connect' | 'ttft' | 'idle' | 'total'

/** The four kinds, and a limit of the callee's own (see `CallTimer.limit`). */
type Limit = TimeoutKind | 'callee'

/** Checked in this order, so of two limits due at the same instant the first listed fires. */
const LIMITS: Limit[] = ['total', 'connect', 'ttft', 'idle', 'callee']

/** A callee's own limit, running on the call's one timer. */
export interface CalleeLimit {
  /** The call's signal: it aborts when this limit or any other ends the call. */
  readonly signal: AbortSignal
  /** Whether this limit is what ended the call. */
  readonly expired: boolean
  /** (Re)starts the limit from now. */
  restart(): void
  /** Stops the limit (the callee is not waiting on the upstream meanwhile). */
  pause(): void
}

const phrases: Record<TimeoutKind, string> = {
  connect: 'no response headers',
  ttft: 'no first token',
  idle: 'no next chunk',
  total: 'no complete answer',
}

/** The reason a timer's signal aborts with. */
export class TimeoutError extends Error {
  constructor(
    readonly kind: TimeoutKind,
    readonly limitMs: number,
  ) {
    super(`${phrases[kind]} within ${limitMs} ms`)
    this.name = 'TimeoutError'
  }
}

export class CallTimer {
  /** Aborts on any timeout, on the parent's abort, and on `abort()`: hand it to the upstream. */
  readonly signal: AbortSignal
  private readonly controller = new AbortController()
  /** When each limit runs out (performance.now() ms); Infinity while it is not running. */
  private readonly due: Record<Limit, number> = {
    total: Number.POSITIVE_INFINITY,
    connect: Number.POSITIVE_INFINITY,
    ttft: Number.POSITIVE_INFINITY,
    idle: Number.POSITIVE_INFINITY,
    callee: Number.POSITIVE_INFINITY,
  }
  private timer: ReturnType<typeof setTimeout> | undefined
  private armedFor = Number.POSITIVE_INFINITY
  private aborted: Promise<never> | undefined
  private rejectAborted: ((reason: unknown) => void) | undefined
  private fired: Limit | null = null
  private seenFirst = false
  private readonly onParentAbort = () => this.kill(this.parent.reason)

  constructor(
    private readonly limits: TimeoutLimits,
    private readonly parent: AbortSignal,
  ) {
    this.signal = this.controller.signal
    if (parent.aborted) {
      this.controller.abort(parent.reason)
      return
    }
    parent.addEventListener('abort', this.onParentAbort, { once: true })
    this.arm('total', limits.totalMs)
    this.arm('connect', limits.connectMs)
    this.arm('ttft', limits.ttftMs)
  }

  /** Which limit fired, if one did (a callee's own limit is the callee's to report). */
  get expired(): TimeoutKind | null {
    return this.fired === 'callee' ? null : this.fired
  }

  limitOf(kind: TimeoutKind): number {
    return this.limits[`${kind}Ms`]
  }

  /** The upstream's response headers arrived: the connect phase is over. */
  connected(): void {
    this.disarm('connect')
  }

  /**
   * A limit of the callee's own (say, a provider's timeout) kept by this timer, so the call
   * still has one timer and one signal: it starts now, and the callee restarts and pauses it.
   */
  limit(ms: number): CalleeLimit {
    const timer = this
    const limit: CalleeLimit = {
      signal: this.signal,
      get expired() {
        return timer.fired === 'callee'
      },
      restart: () => this.arm('callee', ms),
      pause: () => this.disarm('callee'),
    }
    limit.restart()
    return limit
  }

  /**
   * Awaits one step of the call under its phase's limit: the first value (an answer, or a
   * stream's first chunk) under connect and time to first token, every later chunk under
   * the idle limit, which runs only while waiting here, so a slow client never trips it.
   */
  async watch<T>(step: Promise<T>): Promise<T> {
    if (this.seenFirst) this.arm('idle', this.limits.idleMs)
    try {
      const value = await Promise.race([step, this.abortedPromise()])
      if (!this.seenFirst) {
        this.seenFirst = true
        this.disarm('connect')
        this.disarm('ttft')
      }
      return value
    } finally {
      this.disarm('idle')
    }
  }

  /** The call is over: stops every limit without aborting. */
  done(): void {
    clearTimeout(this.timer)
    this.armedFor = Number.POSITIVE_INFINITY
    for (const limit of LIMITS) this.due[limit] = Number.POSITIVE_INFINITY
    this.parent.removeEventListener('abort', this.onParentAbort)
  }

  /** Tears the upstream request down (a failed or abandoned attempt) and stops every limit. */
  abort(): void {
    this.done()
    this.kill(undefined)
  }

  /** Rejects with the signal's reason once it aborts; made on the first watch, never before. */
  private abortedPromise(): Promise<never> {
    if (!this.aborted) {
      this.aborted = new Promise<never>((_, reject) => {
        this.rejectAborted = reject
      })
      // Nobody may be awaiting when the signal aborts; the rejection is observed through race().
      this.aborted.catch(() => {})
      if (this.signal.aborted && this.fired !== 'callee') this.rejectAborted!(this.signal.reason)
    }
    return this.aborted
  }

  private kill(reason: unknown): void {
    if (this.signal.aborted) return
    this.controller.abort(reason)
    // A callee's own limit is the callee's to report: its step rejects with its own error.
    if (this.fired !== 'callee') this.rejectAborted?.(this.signal.reason)
  }

  private arm(limit: Limit, ms: number): void {
    if (!(ms > 0) || !Number.isFinite(ms) || this.signal.aborted) return
    this.due[limit] = performance.now() + ms
    this.schedule(this.due[limit])
  }

  private disarm(limit: Limit): void {
    // The timer stays: when it fires with nothing due it is armed for what is due next.
    this.due[limit] = Number.POSITIVE_INFINITY
  }

  private schedule(at: number): void {
    if (at >= this.armedFor) return
    clearTimeout(this.timer)
    this.armedFor = at
    this.timer = setTimeout(() => this.tick(), Math.max(0, Math.ceil(at - performance.now())))
  }

  private tick(): void {
    this.armedFor = Number.POSITIVE_INFINITY
    let first: Limit = 'total'
    for (const limit of LIMITS) if (this.due[limit] < this.due[first]) first = limit
    if (this.due[first] <= performance.now()) this.fire(first)
    else if (Number.isFinite(this.due[first])) this.schedule(this.due[first])
  }

  private fire(limit: Limit): void {
    if (this.signal.aborted) return
    this.fired = limit
    this.done()
    // A callee's own limit aborts with a plain AbortError, as the callee's own timer would.
    this.kill(limit === 'callee' ? undefined : new TimeoutError(limit, this.limits[`${limit}Ms`]))
  }
}
