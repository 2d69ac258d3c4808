/**
 * The cost ledger service: turns settled Exchanges into ledger rows for the write-behind
 * writer, holds the budget book and the reports, replays what an earlier shutdown spilled,
 * and says how it is doing (stats for metrics, a check for readiness).
 */
import type { Db } from '../../db/client'
import { ApiError, type Exchange } from '../exchange'
import { BudgetBook } from './budgets'
import { eventRow } from './events'
import { CostReports } from './reports'
import { type LedgerSink, postgresSink } from './sink'
import { Spill } from './spill'
import { LedgerWriter, type WriterOptions, type WriterStats } from './writer'

/** Where the ledger reports what an operator must know; `src/log` fits it. */
export interface LedgerLog {
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
}

/** The writer's own settings pass through unchanged; the ledger adds its spill and budgets. */
export interface LedgerInit
  extends Pick<
    WriterOptions,
    | 'flushIntervalMs'
    | 'batchSize'
    | 'maxBacklog'
    | 'overflow'
    | 'retryInitialMs'
    | 'retryMaxMs'
    | 'shutdownTimeoutMs'
    | 'onFlush'
  > {
  spillDir: string | null
  budgetRefreshMs: number
  db: Db
  log: LedgerLog
  now: () => number
  /** Wraps the database writer (benchmarks slow it down, tests make it fail). */
  wrapSink: (sink: LedgerSink) => LedgerSink
}

export interface LedgerStats extends WriterStats {
  budgetsLoadedAt: string | null
  budgetsError: string | null
}

/** The shape of `src/routes/health.ts`'s HealthCheck, which a plugin cannot import. */
export interface LedgerHealthCheck {
  name: string
  failureStatus: 'healthy' | 'degraded' | 'unhealthy'
  check(): Promise<{ status: 'healthy' | 'degraded' | 'unhealthy'; message: string }>
}

/** Note set on an Exchange whose id the caller supplied (`x-request-id`). */
export const clientIdNote = 'ledger:client-request-id'

export class Ledger {
  /** Identifies this ledger in plugin seeds, so two apps never share one by deduplication. */
  readonly id = crypto.randomUUID()
  readonly budgets: BudgetBook
  readonly reports: CostReports
  readonly writer: LedgerWriter
  private readonly sink: LedgerSink
  private readonly spill: Spill
  private closing: Promise<void> | null = null
  /** Model requests admitted and not yet recorded, so close() can wait for their settlement. */
  private readonly open = new Set<Exchange>()

  constructor(private readonly init: LedgerInit) {
    const { log } = init
    this.sink = init.wrapSink(postgresSink(init.db))
    this.spill = new Spill(init.spillDir)
    this.reports = new CostReports(init.db)
    this.budgets = new BudgetBook(init.db, init.budgetRefreshMs, init.now, (error) =>
      log.warn('ledger: budgets could not be refreshed', { error: String(error) }),
    )
    this.writer = new LedgerWriter({
      ...init,
      write: this.sink,
      onFlushError: (error, { attempt, backlog }) => {
        // Every failure is counted; the log says so on the first and then sparsely.
        if (attempt === 1 || attempt % 10 === 0)
          log.error('ledger: flush failed; keeping the batch and retrying', {
            error: String(error),
            attempt,
            backlog,
          })
      },
      onBacklogFull: (full, backlog) =>
        full
          ? log.error('ledger: backlog full', {
              backlog,
              max_backlog: init.maxBacklog,
              overflow: init.overflow,
              consequence:
                init.overflow === 'reject'
                  ? 'model requests are refused (503) until the backlog drains'
                  : 'new ledger events are dropped (counted in stats) until the backlog drains',
            })
          : log.info('ledger: backlog below its limit again', { backlog }),
      onUnwritten: async (rows) => {
        const cost = rows.reduce((sum, row) => sum + BigInt(row.cost_nano_usd), 0n)
        const path = await this.spill.save(rows).catch((error: unknown) => {
          log.error('ledger: cannot spill unwritten events', { error: String(error) })
          return null
        })
        log.error('ledger: events not written to the database at shutdown', {
          events: rows.length,
          cost_nano_usd: cost.toString(),
          spilled_to: path,
          request_ids: path === null ? rows.map((row) => row.request_id) : undefined,
        })
      },
    })
  }

  /** Loads the budget book and writes what an earlier shutdown spilled; never rejects. */
  async start(): Promise<void> {
    await this.budgets.start()
    try {
      const replayed = await this.spill.replay(this.sink, this.init.batchSize)
      if (replayed.files > 0) this.init.log.info('ledger: spilled events written', replayed)
    } catch (error) {
      this.init.log.error('ledger: spilled events not written yet; retried at the next start', {
        error: String(error),
        dir: this.init.spillDir,
      })
    }
  }

  /** Marks a model request as one close() must wait for, should it settle. */
  track(exchange: Exchange): void {
    this.open.add(exchange)
  }

  /** A request that ended without settling (denied, invalid): there is nothing to wait for. */
  untrack(exchange: Exchange): void {
    if (!exchange.isSettled) this.open.delete(exchange)
  }

  /** The settlement listener: queues the exchange's row and returns at once. */
  record(exchange: Exchange): void {
    this.open.delete(exchange)
    const row = eventRow(exchange, exchange.notes.get(clientIdNote) === true)
    if (row) this.writer.enqueue(row)
  }

  /** True while new model requests must be refused so that no admitted one goes unrecorded. */
  get refusing(): boolean {
    return this.init.overflow === 'reject' && this.writer.full
  }

  /** The answer for an admin request whose database work failed; the cause goes to the log. */
  unavailable(error: unknown): ApiError {
    this.init.log.warn('ledger: database unavailable for a report or budget', { error: String(error) })
    return new ApiError({
      status: 503,
      message: 'The cost database is unavailable; retry shortly.',
      code: 'ledger_unavailable',
      headers: { 'retry-after': '5' },
    })
  }

  stats(): LedgerStats {
    return {
      ...this.writer.stats(),
      budgetsLoadedAt: this.budgets.loadedAt?.toISOString() ?? null,
      budgetsError: this.budgets.lastError,
    }
  }

  /** Readiness: unhealthy while refusing requests, degraded while writes fail or events drop. */
  healthCheck(): LedgerHealthCheck {
    return {
      name: 'ledger',
      failureStatus: 'degraded',
      check: async () => {
        const stats = this.stats()
        const backlog = `backlog ${stats.backlog}/${stats.maxBacklog}`
        if (stats.full)
          return {
            status: this.refusing ? 'unhealthy' : 'degraded',
            message: `${backlog} full: ${this.refusing ? 'refusing model requests' : `${stats.dropped} events dropped`}`,
          }
        if (stats.consecutiveFailures > 0)
          return {
            status: 'degraded',
            message: `${backlog}; writes failing (${stats.consecutiveFailures} in a row): ${stats.lastFailure?.message}`,
          }
        if (stats.budgetsError) return { status: 'degraded', message: `budgets stale: ${stats.budgetsError}` }
        return { status: 'healthy', message: `${backlog}; ${stats.written} events written` }
      },
    }
  }

  /** Flushes everything (spilling what cannot be written by the deadline); idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.budgets.stop()
      // Streams cut by the shutdown settle a moment later, and settlement reaches the ledger
      // only after quota reconciliation: wait for those listeners (bounded) before the last flush.
      if (this.open.size > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined
        const waited = new Promise((resolve) => {
          timer = setTimeout(resolve, this.init.shutdownTimeoutMs / 2)
        })
        await Promise.race([Promise.all([...this.open].map((exchange) => exchange.settled)), waited])
        clearTimeout(timer)
      }
      await this.writer.close()
    })()
    return this.closing
  }
}
