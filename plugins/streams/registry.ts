/**
 * The instance's active SSE streams: each relayed stream registers when it starts and
 * leaves when it ends, reporting bytes and tokens sent as it goes, so an operator can see
 * what is running and end one. The registry only lists and signals; the relay that owns a
 * stream decides how it ends (cancelled event, upstream abort, settlement).
 */
import type { Exchange } from '../exchange'

/** Why a stream was cancelled; only operators cancel through the registry today. */
export type CancelReason = 'admin'

export interface OpenStream {
  exchange: Exchange
  /** Ends the stream; called at most once, and never after `close()`. */
  cancel: (reason: CancelReason) => void
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
  startedAt: number
  bytes: number
  tokens: number
}

export class StreamRegistry {
  private readonly active = new Map<string, Active>()

  /**
   * @param heartbeatMs How long a relay lets the upstream stay silent before it sends a
   *   comment line, so proxies do not cut the idle connection.
   */
  constructor(
    readonly heartbeatMs: number,
    private readonly now: () => number,
  ) {}

  open({ exchange, cancel }: OpenStream): StreamHandle {
    const entry: Active = { exchange, cancel, startedAt: this.now(), bytes: 0, tokens: 0 }
    this.active.set(exchange.id, entry)
    return {
      progress(bytes, tokens) {
        entry.bytes = bytes
        entry.tokens = tokens
      },
      close: () => {
        // Only its own entry: an id is never reused, but a stale handle must not drop another.
        if (this.active.get(exchange.id) === entry) this.active.delete(exchange.id)
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
    this.active.delete(id)
    entry.cancel(reason)
    return true
  }

  get size(): number {
    return this.active.size
  }
}
