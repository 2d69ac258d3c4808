/**
 * The gateway's metrics API over one prom-client registry. The plugin records HTTP traffic
 * and every settled Exchange itself; the other plugins report through the methods below,
 * which match their callbacks (`onDecision`, `onFallback`, `onEvent`, `onFlush`), or are
 * read at scrape time from the running totals they keep (`readCache`, `readLedger`,
 * `readBreakers`). Every method is a bound function, so it can be handed over as it is.
 */
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client'
import type { Exchange } from '../exchange'
import { createFamilies, type Families } from './families'
import { LabelGuard, methodLabel, routeLabel, statusLabel } from './labels'
import {
  type BreakerEventLike,
  type CacheTotals,
  type DependencyProbe,
  type LedgerTotals,
  type QuotaDecisionLike,
  Totals,
  within,
} from './sources'

export interface MetricsOptions {
  /** Reported as `tollgate_build_info{version}`. */
  version: string
  /** Model names clients may send; any other reads `other`. Unset: the first 64 seen. */
  models?: string[]
  /** Tier names; any other reads `other`. Unset: the first 64 seen. */
  tiers?: string[]
  /** Process and runtime metrics (CPU, memory, event loop, GC) under their standard names. */
  processMetrics: boolean
  /** Exported as `tollgate_cost_alert_daily_usd` for the DailyCostHigh alert; null: no alert. */
  dailyCostAlertUsd: number | null
  dependencies: DependencyProbe[]
  /** Longest a dependency check may take at scrape time, in ms. */
  dependencyTimeoutMs: number
}

const nanoPerUsd = 1e9
const states = ['closed', 'open', 'half_open']

export class GatewayMetrics {
  readonly registry = new Registry()
  private readonly families: Families
  private readonly models: LabelGuard
  private readonly tiers: LabelGuard
  /** One guard per label name for the values that other plugins report. */
  private readonly guards = new Map<string, LabelGuard>()
  private readonly totals = new Totals()
  private readonly scrapeSources: Array<() => void> = []

  constructor(private readonly options: MetricsOptions) {
    this.families = createFamilies([this.registry])
    this.models = new LabelGuard({ known: options.models })
    this.tiers = new LabelGuard({ known: options.tiers })
    this.families.buildInfo.set({ version: options.version }, 1)
    // Only when configured: an unset threshold must leave the alert's expression empty, not 0.
    if (options.dailyCostAlertUsd !== null)
      new Gauge({
        name: 'tollgate_cost_alert_daily_usd',
        help: 'The configured daily cost in USD above which the DailyCostHigh alert fires.',
        registers: [this.registry],
      }).set(options.dailyCostAlertUsd)
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry })
  }

  /** The exposition text, after the scrape-time sources and dependency checks ran. */
  async render(): Promise<string> {
    for (const read of this.scrapeSources) read()
    await Promise.all(this.options.dependencies.map((probe) => this.probe(probe)))
    return this.registry.metrics()
  }

  get contentType(): string {
    return this.registry.contentType
  }

  // --- recorded by the plugin itself ---

  requestStarted(): void {
    this.families.httpInFlight.inc()
  }

  requestFinished(method: string, route: string | undefined, status: number, seconds: number): void {
    const labels = { method: methodLabel(method), route: routeLabel(route) }
    this.families.httpInFlight.dec()
    this.families.httpRequests.inc({ ...labels, status: statusLabel(status) })
    this.families.httpDuration.observe(labels, seconds)
  }

  streamOpened(): void {
    this.families.streamsActive.inc()
  }

  streamClosed(): void {
    this.families.streamsActive.dec()
  }

  /** A settled model request: its outcome, usage, cost, saving and timings. */
  recordExchange(exchange: Exchange): void {
    const f = this.families
    const outcome = exchange.settlement?.outcome ?? 'error'
    const tier = this.tiers.value(exchange.principal?.tier)
    const model = this.models.value(exchange.servedModel)
    f.modelRequests.inc({
      model: this.models.value(exchange.requestedModel),
      served_model: model,
      tier,
      outcome,
    })
    const { promptTokens, completionTokens, cachedTokens } = exchange.usage
    if (promptTokens > 0) f.tokens.inc({ model, tier, type: 'input' }, promptTokens)
    if (completionTokens > 0) f.tokens.inc({ model, tier, type: 'output' }, completionTokens)
    if (cachedTokens > 0) f.tokens.inc({ model, tier, type: 'cached' }, cachedTokens)
    if (exchange.costNanoUsd > 0n) f.cost.inc({ model, tier }, Number(exchange.costNanoUsd) / nanoPerUsd)
    if (exchange.savedNanoUsd > 0n)
      f.cacheSaved.inc({ model, tier }, Number(exchange.savedNanoUsd) / nanoPerUsd)
    let upstreamMs = 0
    let upstreamPhases = 0
    for (const phase of exchange.phases) {
      if (!phase.name.startsWith('upstream')) continue
      const ms = phase.end - phase.start
      upstreamMs += ms
      upstreamPhases++
      const { provider, model: attempted } = phase.attributes
      f.upstreamDuration.observe(
        {
          provider: this.label('provider', typeof provider === 'string' ? provider : exchange.provider),
          model: typeof attempted === 'string' ? this.models.value(attempted) : model,
        },
        ms / 1000,
      )
    }
    if (exchange.ttftMs !== null && outcome !== 'cached')
      f.timeToFirstToken.observe({ model }, exchange.ttftMs / 1000)
    // Without upstream phases the upstream time is unknown, unless nothing went upstream.
    if (upstreamPhases > 0 || exchange.attempts === 0)
      f.overhead.observe(
        { route: routeLabel(exchange.route) },
        Math.max(0, exchange.latencyMs - upstreamMs) / 1000,
      )
  }

  /** A model request answered before it could settle: denied by quota, invalid, failed. */
  recordRefusal(exchange: Exchange, status: number): void {
    const outcome = status === 429 ? 'denied' : status >= 500 ? 'error' : 'rejected'
    this.families.modelRequests.inc({
      model: this.models.value(exchange.requestedModel),
      served_model: 'none',
      tier: this.tiers.value(exchange.principal?.tier),
      outcome,
    })
  }

  // --- for the other plugins ---

  /** Quota's `onDecision`. */
  readonly quotaDecision = (decision: QuotaDecisionLike, seconds: number): void => {
    this.families.quotaDecisions.inc({
      limit: this.label('limit', decision.limit),
      outcome: this.label('outcome', decision.outcome),
    })
    this.families.quotaCheck.observe(seconds)
  }

  /** Quota's `onFallback`. */
  readonly quotaFallback = (active: boolean): void => {
    this.families.quotaFallback.set(active ? 1 : 0)
  }

  /** One refused credential; the reason is one of a fixed set, never the key or address. */
  readonly authFailure = (reason: string): void => {
    this.families.authFailures.inc({ reason })
  }

  /** One cache lookup (or `count` of them: embedding lookups count per input). */
  readonly cacheLookup = (cache: string, result: string, count = 1): void => {
    if (count > 0)
      this.families.cacheLookups.inc(
        { cache: this.label('cache', cache), result: this.label('result', result) },
        count,
      )
  }

  /** Entries written to the cache and their bytes. */
  readonly cacheStored = (cache: string, entries: number, bytes: number): void => {
    const labels = { cache: this.label('cache', cache) }
    if (entries > 0) this.families.cacheStores.inc(labels, entries)
    if (bytes > 0) this.families.cacheStoredBytes.inc(labels, bytes)
  }

  /** Reads the cache's running totals at every scrape (the cache plugin keeps counters only). */
  readonly readCache = (read: () => CacheTotals): void => {
    this.scrapeSources.push(() => {
      const stats = read()
      for (const [cache, results] of Object.entries(stats.lookups))
        for (const [result, total] of Object.entries(results))
          this.cacheLookup(cache, result, this.totals.delta(`cache:${cache}:${result}`, total))
      for (const [cache, { entries, bytes }] of Object.entries(stats.stored))
        this.cacheStored(
          cache,
          this.totals.delta(`stores:${cache}`, entries),
          this.totals.delta(`bytes:${cache}`, bytes),
        )
      const oversize = this.totals.delta('cache:oversize', stats.oversize)
      if (oversize > 0) this.families.cacheOversize.inc(oversize)
    })
  }

  /** Breaker's `onEvent`. */
  readonly breakerEvent = (event: BreakerEventLike): void => {
    const f = this.families
    switch (event.type) {
      case 'transition':
        f.breakerTransitions.inc({
          target: this.label('target', event.target),
          from: this.label('state', event.from),
          to: this.label('state', event.to),
        })
        break
      case 'rejected':
        f.breakerRejections.inc({ target: this.label('target', event.target) })
        break
      case 'retry':
        f.retries.inc({ target: this.label('target', event.target) })
        break
      case 'timeout':
        f.timeouts.inc({ target: this.label('target', event.target), kind: this.label('kind', event.kind) })
        break
      case 'fallback':
        f.fallbacks.inc({ model: this.models.value(event.servedBy) })
        break
      case 'stale':
        f.staleAnswers.inc({ model: this.models.value(event.model) })
        break
    }
  }

  /** Reads every breaker's state at each scrape (BreakerService.list()). */
  readonly readBreakers = (read: () => Iterable<{ target: string; state: string }>): void => {
    this.scrapeSources.push(() => {
      for (const { target, state } of read())
        for (const candidate of states)
          this.families.breakerState.set(
            { target: this.label('target', target), state: candidate },
            candidate === state ? 1 : 0,
          )
    })
  }

  /** The cost ledger's `onFlush`. */
  readonly ledgerFlush = (flush: { ms: number }): void => {
    this.families.ledgerFlush.observe(flush.ms / 1000)
  }

  /** Reads the ledger's backlog and totals at each scrape (Ledger.stats()). */
  readonly readLedger = (read: () => LedgerTotals): void => {
    this.scrapeSources.push(() => {
      const stats = read()
      const f = this.families
      f.ledgerBacklog.set(stats.backlog)
      f.ledgerWritten.inc(this.totals.delta('ledger:written', stats.written))
      f.ledgerFlushFailures.inc(this.totals.delta('ledger:failures', stats.flushFailures))
      f.ledgerDropped.inc(this.totals.delta('ledger:dropped', stats.dropped))
    })
  }

  private label(name: string, raw: string | null | undefined): string {
    let guard = this.guards.get(name)
    if (!guard) {
      guard = new LabelGuard()
      this.guards.set(name, guard)
    }
    return guard.value(raw)
  }

  private async probe({ name, ping }: DependencyProbe): Promise<void> {
    const started = performance.now()
    let up = 1
    try {
      await within(ping(), this.options.dependencyTimeoutMs)
    } catch {
      up = 0
    }
    this.families.dependencyUp.set({ dependency: name }, up)
    if (up) this.families.dependencyLatency.set({ dependency: name }, (performance.now() - started) / 1000)
  }
}
