/**
 * The instance's active SSE streams: each relayed stream registers when it starts and
 * leaves when it ends, reporting bytes and tokens sent as it goes, so an operator can see
 * what is running and end one. The registry only lists and signals; the relay that owns a
 * stream decides how it ends (cancelled event, upstream abort, settlement).
 *
 * Heartbeats run on one ticker for the whole instance, not a timer per stream: every
 * quarter of `heartbeatMs` it signals each stream that has sent nothing for `heartbeatMs`,
 * so a silent stream gets a comment line at most a quarter interval late. Ten thousand
 * streams cost one interval and a scan of ten thousand numbers, not a timer per chunk.
 */
import type { Exchange } from '../exchange'

/** Why a stream was cancelled; only operators cancel through the registry today. */
export type CancelReason = 'admin'

export interface OpenStream {
  exchange: Exchange
  /** Ends the stream; called at most once, and never after `close()`. */
  cancel: (reason: CancelReason) => void
  /** The stream sent nothing for `heartbeatMs`; called again after each further such interval. */
  idle: () => void
}

/** What the relay holds while it streams. */
export interface StreamHandle {
  /** Totals sent to the client so far (not increments), so a late report is harmless. */
  progress(bytes: number, tokens: number): void
  /** Leaves the registry; safe to call more than once. */
  close(): void
}

export interface StreamEntry {
  id: string
  key_id: string | null
  user_id: string | null
  model: string | null
  started_at: string
  tokens: number
  bytes: number
}

interface Active {
  exchange: Exchange
  cancel: (reason: CancelReason) => void
  idle: () => void
  startedAt: number
  bytes: number
  tokens: number
  /** performance.now() when the stream last sent something (or was last told it is idle). */
  lastSent: number
}

export class StreamRegistry {
  private readonly active = new Map<string, Active>()
  private ticker: ReturnType<typeof setInterval> | undefined

  /**
   * @param heartbeatMs How long a relay lets the upstream stay silent before it sends a
   *   comment line, so proxies do not cut the idle connection.
   */
  constructor(
    readonly heartbeatMs: number,
    private readonly now: () => number,
  ) {}

  open({ exchange, cancel, idle }: OpenStream): StreamHandle {
    const entry: Active = {
      exchange,
      cancel,
      idle,
      startedAt: this.now(),
      bytes: 0,
      tokens: 0,
      lastSent: performance.now(),
    }
    this.active.set(exchange.id, entry)
    this.ticker ??= setInterval(() => this.tick(), Math.max(1, this.heartbeatMs / 4)).unref()
    return {
      progress(bytes, tokens) {
        entry.bytes = bytes
        entry.tokens = tokens
        entry.lastSent = performance.now()
      },
      close: () => {
        // Only its own entry: an id is never reused, but a stale handle must not drop another.
        if (this.active.get(exchange.id) === entry) this.forget(exchange.id)
      },
    }
  }

  list(): StreamEntry[] {
    return [...this.active.values()].map(({ exchange, startedAt, bytes, tokens }) => ({
      id: exchange.id,
      key_id: exchange.principal?.keyId ?? null,
      user_id: exchange.principal?.userId ?? null,
      model: exchange.servedModel ?? exchange.requestedModel ?? null,
      started_at: new Date(startedAt).toISOString(),
      tokens,
      bytes,
    }))
  }

  /** Signals the stream's owner and forgets it at once, so a second cancel finds nothing. */
  cancel(id: string, reason: CancelReason = 'admin'): boolean {
    const entry = this.active.get(id)
    if (!entry) return false
    this.forget(id)
    entry.cancel(reason)
    return true
  }

  private forget(id: string): void {
    this.active.delete(id)
    if (this.active.size === 0 && this.ticker !== undefined) {
      clearInterval(this.ticker)
      this.ticker = undefined
    }
  }

  private tick(): void {
    const now = performance.now()
    const due = now - this.heartbeatMs
    for (const entry of this.active.values()) {
      if (entry.lastSent > due) continue
      entry.lastSent = now
      entry.idle()
    }
  }
}
