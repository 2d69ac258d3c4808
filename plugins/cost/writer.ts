/**
 * The write-behind ledger writer. Settlement hands it a row and returns at once: the request
 * path never waits for the database. Rows are written in batches, one statement each, when
 * a batch is full or the oldest pending row has waited the flush interval.
 *
 * When a write fails the batch is kept and retried with exponential backoff, and new rows
 * keep queueing up to `maxBacklog`. What happens beyond it is the overflow policy:
 * `reject` keeps every row of an admitted request (the plugin refuses new model requests
 * with 503 while the backlog is full, so memory stays bounded by what is in flight), and
 * `drop` serves on and discards new rows, counting them and their cost. Either way the
 * state is announced through `onBacklogFull`, `stats()` and the readiness check.
 *
 * `close()` flushes everything, retrying until its deadline; what still cannot be written
 * then is handed to `onUnwritten` (the plugin spills it to a file for the next start).
 */
import type { EventRow } from './events'
import type { LedgerSink } from './sink'

export type OverflowPolicy = 'reject' | 'drop'

export interface WriterOptions {
  write: LedgerSink
  flushIntervalMs: number
  batchSize: number
  maxBacklog: number
  overflow: OverflowPolicy
  retryInitialMs: number
  retryMaxMs: number
  shutdownTimeoutMs: number
  onFlush: (flush: { events: number; inserted: number; ms: number }) => void
  onFlushError: (error: unknown, state: { attempt: number; backlog: number }) => void
  onBacklogFull: (full: boolean, backlog: number) => void
  onUnwritten: (rows: EventRow[]) => Promise<void>
}

export interface WriterStats {
  /** Rows queued or being written. */
  backlog: number
  maxBacklog: number
  full: boolean
  overflow: OverflowPolicy
  enqueued: number
  /** Rows the database accepted as new. */
  written: number
  /** Rows a flush found already written (retries of a committed batch). */
  duplicates: number
  flushes: number
  flushFailures: number
  consecutiveFailures: number
  lastFlushMs: number | null
  maxFlushMs: number
  totalFlushMs: number
  lastFailure: { at: string; message: string } | null
  /** Rows discarded by the `drop` policy, and their cost. */
  dropped: number
  droppedCostNanoUsd: bigint
  /** Rows handed to `onUnwritten` at close. */
  unwritten: number
  /** Age of the oldest row not yet written, in ms. */
  oldestPendingMs: number | null
}

export class LedgerWriter {
  private queue: EventRow[] = []
  private queuedAt: number[] = []
  private inflight: EventRow[] = []
  private inflightSince: number | null = null
  private timer: ReturnType<typeof setTimeout> | null = null
  private draining: Promise<void> | null = null
  private closing: Promise<void> | null = null
  /** Set when close() begins: partial batches go at once from then on. */
  private stopping = false
  private closed = false
  private deadline = Number.POSITIVE_INFINITY
  private wasFull = false
  private readonly counters = {
    enqueued: 0,
    written: 0,
    duplicates: 0,
    flushes: 0,
    flushFailures: 0,
    consecutiveFailures: 0,
    lastFlushMs: null as number | null,
    maxFlushMs: 0,
    totalFlushMs: 0,
    lastFailure: null as WriterStats['lastFailure'],
    dropped: 0,
    droppedCostNanoUsd: 0n,
    unwritten: 0,
  }

  constructor(private readonly options: WriterOptions) {}

  get backlog(): number {
    return this.queue.length + this.inflight.length
  }

  get full(): boolean {
    return this.backlog >= this.options.maxBacklog
  }

  /** Queues a row; false when the `drop` policy discarded it or the writer is closed. */
  enqueue(row: EventRow): boolean {
    if (this.closed) {
      // A settlement that lands after close() finished: hand it over like the rest.
      this.counters.unwritten++
      void this.options.onUnwritten([row])
      return false
    }
    if (this.full && this.options.overflow === 'drop') {
      this.counters.dropped++
      this.counters.droppedCostNanoUsd += BigInt(row.cost_nano_usd)
      this.announceFull()
      return false
    }
    this.counters.enqueued++
    this.queue.push(row)
    this.queuedAt.push(performance.now())
    this.announceFull()
    if (this.queue.length >= this.options.batchSize) this.kick()
    else if (this.timer === null && this.draining === null) this.arm()
    return true
  }

  stats(): WriterStats {
    const oldest = this.inflightSince ?? this.queuedAt[0] ?? null
    return {
      ...this.counters,
      backlog: this.backlog,
      maxBacklog: this.options.maxBacklog,
      full: this.full,
      overflow: this.options.overflow,
      oldestPendingMs: oldest === null ? null : performance.now() - oldest,
    }
  }

  /** Writes everything queued (including rows that arrive meanwhile), retrying until the deadline. */
  close(): Promise<void> {
    this.closing ??= this.finish()
    return this.closing
  }

  private async finish(): Promise<void> {
    this.stopping = true
    this.deadline = performance.now() + this.options.shutdownTimeoutMs
    // Settlement listeners run a tick after the response; let the last ones queue their rows.
    await new Promise((resolve) => setImmediate(resolve))
    while (this.backlog > 0 && performance.now() < this.deadline) {
      this.kick()
      await this.draining
    }
    this.closed = true
    this.disarm()
    const rows = [...this.inflight, ...this.queue]
    this.inflight = []
    this.queue = []
    this.queuedAt = []
    if (rows.length > 0) {
      this.counters.unwritten += rows.length
      await this.options.onUnwritten(rows)
    }
  }

  private arm(): void {
    this.timer = setTimeout(() => this.kick(), this.options.flushIntervalMs)
    this.timer.unref?.()
  }

  private disarm(): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }

  private kick(): void {
    this.disarm()
    if (this.draining) return
    this.draining = this.drain().finally(() => {
      this.draining = null
      if (this.backlog > 0 && !this.closed) this.arm()
    })
  }

  /**
   * One writer at a time, so batches commit in order and a failing database sees one
   * retrying batch, not a growing number of concurrent ones. Full batches go back to back;
   * a partial one waits for the timer, except while closing.
   */
  private async drain(): Promise<void> {
    for (;;) {
      if (this.inflight.length === 0) {
        if (this.queue.length === 0) return
        this.inflight = this.queue.splice(0, this.options.batchSize)
        this.inflightSince = this.queuedAt[0] ?? performance.now()
        this.queuedAt.splice(0, this.inflight.length)
      }
      if (await this.writeInflight()) {
        if (this.queue.length < this.options.batchSize && !this.stopping) return
        continue
      }
      const left = this.deadline - performance.now()
      if (left <= 0) return
      const attempt = this.counters.consecutiveFailures
      const backoff = Math.min(this.options.retryMaxMs, this.options.retryInitialMs * 2 ** (attempt - 1))
      // Jitter, so instances that lost the same database do not retry in lockstep.
      await sleep(Math.min(left, backoff * (0.5 + Math.random() / 2)))
    }
  }

  private async writeInflight(): Promise<boolean> {
    const started = performance.now()
    const batch = this.inflight
    try {
      const { inserted } = await this.options.write(batch)
      const ms = performance.now() - started
      this.counters.flushes++
      this.counters.written += inserted
      this.counters.duplicates += batch.length - inserted
      this.counters.consecutiveFailures = 0
      this.counters.lastFlushMs = ms
      this.counters.totalFlushMs += ms
      this.counters.maxFlushMs = Math.max(this.counters.maxFlushMs, ms)
      this.inflight = []
      this.inflightSince = null
      this.announceFull()
      this.options.onFlush({ events: batch.length, inserted, ms })
      return true
    } catch (error) {
      this.counters.flushFailures++
      this.counters.consecutiveFailures++
      this.counters.lastFailure = { at: new Date().toISOString(), message: (error as Error).message }
      this.options.onFlushError(error, { attempt: this.counters.consecutiveFailures, backlog: this.backlog })
      return false
    }
  }

  private announceFull(): void {
    const full = this.full
    if (full === this.wasFull) return
    this.wasFull = full
    this.options.onBacklogFull(full, this.backlog)
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref?.())
}
