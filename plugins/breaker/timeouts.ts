/**
 * The four time limits of one upstream attempt: connect (until the response headers), time
 * to first token, idle gap between stream chunks, and total. Every limit that fires aborts
 * the attempt's AbortSignal, which the caller hands to the upstream, so a timeout closes the
 * socket instead of leaving it to finish unobserved; and every step a caller awaits through
 * the timer rejects at once, even if the upstream were slow to notice the abort.
 */
import type { TimeoutLimits } from './policy'

export type TimeoutKind = 'connect' | 'ttft' | 'idle' | 'total'

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
  private readonly timers = new Map<TimeoutKind, ReturnType<typeof setTimeout>>()
  private readonly aborted: Promise<never>
  private fired: TimeoutKind | null = null
  private seenFirst = false

  constructor(
    private readonly limits: TimeoutLimits,
    parent: AbortSignal,
  ) {
    this.signal = AbortSignal.any([parent, this.controller.signal])
    this.aborted = new Promise<never>((_, reject) => {
      const fail = () => reject(this.signal.reason)
      if (this.signal.aborted) fail()
      else this.signal.addEventListener('abort', fail, { once: true })
    })
    // Nobody may be awaiting when the signal aborts; the rejection is observed through race().
    this.aborted.catch(() => {})
    this.arm('total', limits.totalMs)
    this.arm('connect', limits.connectMs)
    this.arm('ttft', limits.ttftMs)
  }

  /** Which limit fired, if one did. */
  get expired(): TimeoutKind | null {
    return this.fired
  }

  limitOf(kind: TimeoutKind): number {
    return this.limits[`${kind}Ms`]
  }

  /** The upstream's response headers arrived: the connect phase is over. */
  connected(): void {
    this.disarm('connect')
  }

  /**
   * Awaits one step of the call under its phase's limit: the first value (an answer, or a
   * stream's first chunk) under connect and time to first token, every later chunk under
   * the idle limit, which runs only while waiting here, so a slow client never trips it.
   */
  async watch<T>(step: Promise<T>): Promise<T> {
    if (this.seenFirst) this.arm('idle', this.limits.idleMs)
    try {
      const value = await Promise.race([step, this.aborted])
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
    for (const timer of this.timers.values()) clearTimeout(timer)
    this.timers.clear()
  }

  /** Tears the upstream request down (a failed or abandoned attempt) and stops every limit. */
  abort(): void {
    this.done()
    this.controller.abort()
  }

  private arm(kind: TimeoutKind, ms: number): void {
    if (!(ms > 0) || !Number.isFinite(ms) || this.signal.aborted) return
    this.disarm(kind)
    this.timers.set(
      kind,
      setTimeout(() => this.fire(kind, ms), ms),
    )
  }

  private disarm(kind: TimeoutKind): void {
    const timer = this.timers.get(kind)
    if (timer === undefined) return
    clearTimeout(timer)
    this.timers.delete(kind)
  }

  private fire(kind: TimeoutKind, ms: number): void {
    this.timers.delete(kind)
    if (this.signal.aborted) return
    this.fired = kind
    this.done()
    this.controller.abort(new TimeoutError(kind, ms))
  }
}
