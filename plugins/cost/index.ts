/**
 * Cost accounting, the only door into plugins/cost: an exact usage ledger written behind the
 * request path (one row per settled model request, daily rollups in the same transaction),
 * monthly budgets per user and per key (enforced by the quota plugin's reservation, which
 * reads them from the Exchange), cost reports, and the ledger's health and counters.
 */
import { Elysia } from 'elysia'
import type { Db } from '../../db/client'
import { ApiError, Exchange, type SettlementHub } from '../exchange'
import { clientIdNote, Ledger, type LedgerLog } from './ledger'
import type { LedgerSink } from './sink'
import type { OverflowPolicy } from './writer'

export type { CostAdminOptions } from './admin-routes'
export { costAdmin } from './admin-routes'
export type { MonthView } from './calendar'
export { amount, monthOf, projectMonth } from './calendar'
export type { EventRow } from './events'
export type { LedgerHealthCheck, LedgerLog, LedgerStats } from './ledger'
export { Ledger } from './ledger'
export type { DayRange, Figures } from './reports'
export { reportQueries } from './reports'
export type { LedgerSink } from './sink'
export { postgresSink } from './sink'
export type { OverflowPolicy, WriterStats } from './writer'

export interface CostOptions {
  /** The database holding the ledger tables (either driver). */
  db: Db
  /** The settlement hub; the ledger subscribes to its `ledger` phase. */
  hub: SettlementHub
  /**
   * Off, settled requests are not written to `usage_events`, so reports and spend stay
   * empty. Budgets are still read and enforced (by the quota), counted from zero.
   * @default true
   */
  enabled?: boolean
  /**
   * Longest a settled request waits before its batch is written, in ms.
   * @default 250
   */
  flushIntervalMs?: number
  /**
   * Events per batch; a full batch is written at once.
   * @default 1000
   */
  batchSize?: number
  /**
   * Events held in memory while the database cannot take them.
   * @default 100000
   */
  maxBacklog?: number
  /**
   * Beyond `maxBacklog`: `reject` refuses new model requests (503) so that every admitted
   * request is recorded; `drop` keeps serving and discards new events, counting them.
   * @default 'reject'
   */
  overflow?: OverflowPolicy
  /**
   * First retry delay after a failed write, in ms; doubles up to `retryMaxMs`.
   * @default 100
   */
  retryInitialMs?: number
  /** @default 5000 */
  retryMaxMs?: number
  /**
   * How long close() keeps trying to write the backlog before spilling it, in ms.
   * @default 10000
   */
  shutdownTimeoutMs?: number
  /**
   * Folder for events still unwritten at the end of a shutdown; written at the next start.
   * null: such events are only logged.
   * @default null
   */
  spillDir?: string | null
  /**
   * How often the budget book is re-read from the database, in ms: the bound on how long a
   * budget change takes to reach other instances.
   * @default 5000
   */
  budgetRefreshMs?: number
  /**
   * Paths of the model routes, refused while the backlog is full under `reject`.
   * @default ['/v1/chat/completions', '/v1/embeddings']
   */
  modelRoutes?: readonly string[]
  /**
   * Where operator-facing events go (backlog full, flush failures, spills).
   * @default console
   */
  log?: LedgerLog
  /**
   * Clock in epoch ms, for budget months.
   * @default Date.now
   */
  now?: () => number
  /**
   * Wraps the database writer: benchmarks add latency, tests inject failures.
   * @default identity
   */
  wrapSink?: (sink: LedgerSink) => LedgerSink
  /**
   * Called after every successful flush, for metrics.
   * @default () => {}
   */
  onFlush?: (flush: { events: number; inserted: number; ms: number }) => void
}

export function cost({
  db,
  hub,
  enabled = true,
  flushIntervalMs = 250,
  batchSize = 1000,
  maxBacklog = 100_000,
  overflow = 'reject',
  retryInitialMs = 100,
  retryMaxMs = 5_000,
  shutdownTimeoutMs = 10_000,
  spillDir = null,
  budgetRefreshMs = 5_000,
  modelRoutes = ['/v1/chat/completions', '/v1/embeddings'],
  log = console,
  now = Date.now,
  wrapSink = (sink) => sink,
  onFlush = () => {},
}: CostOptions) {
  const ledger = new Ledger({
    db,
    log,
    now,
    wrapSink,
    onFlush,
    flushIntervalMs,
    batchSize,
    maxBacklog,
    overflow,
    retryInitialMs,
    retryMaxMs,
    shutdownTimeoutMs,
    spillDir,
    budgetRefreshMs,
  })
  void ledger.start()
  if (enabled) {
    hub.subscribe('ledger', function recordInLedger(exchange) {
      ledger.record(exchange)
    })
  }
  const modelPaths = new Set(modelRoutes)
  const backlogFull = new ApiError({
    status: 503,
    message: 'Usage accounting is catching up; retry shortly.',
    code: 'ledger_backlog_full',
    headers: { 'retry-after': '5' },
  })

  return new Elysia({ name: 'tollgate/cost', seed: ledger.id })
    .decorate('ledger', ledger)
    .onBeforeHandle({ as: 'global' }, async function prepareLedger(context) {
      // Runs after auth (a transform hook) and before the route reserves quota.
      const { exchange } = context as { exchange?: unknown }
      if (!(exchange instanceof Exchange) || exchange.principal === null || !modelPaths.has(exchange.path))
        return
      if (enabled) {
        if (ledger.refusing) throw backlogFull
        if (context.request.headers.get('x-request-id') === exchange.id)
          exchange.notes.set(clientIdNote, true)
        ledger.track(exchange)
      }
      // Only the first requests of an instance wait, for the budget book's first read.
      if (!ledger.budgets.known) await ledger.budgets.firstLoad
      if (ledger.budgets.known) exchange.monthlyBudget = ledger.budgets.of(exchange.principal)
    })
    .onAfterResponse({ as: 'global' }, function releaseUnsettled(context) {
      const { exchange } = context as { exchange?: unknown }
      // An answer sent without a settlement (a 429, an unknown model, a thrown Response)
      // never settles later; untrack keeps the ones that did.
      if (exchange instanceof Exchange) ledger.untrack(exchange)
    })
    .onStop(function closeLedger() {
      return ledger.close()
    })
}
