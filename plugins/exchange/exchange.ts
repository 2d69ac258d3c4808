/**
 * One request, one Exchange: the record every plugin annotates and the single point where
 * a model request is settled. Settlement runs the subscribers in a fixed phase order
 * (quota, ledger, cache, metrics, trace) exactly once, off the response's critical path.
 */
import { costOf, freePrice, type Price } from './money'

export interface Principal {
  keyId: string
  userId: string
  tier: string
  /** Per-key limit overrides, as stored with the key; plugins read the fields they own. */
  overrides: Record<string, unknown>
}

export interface Usage {
  promptTokens: number
  completionTokens: number
  cachedTokens: number
}

/**
 * A request's monthly budgets in nano-USD (0: none). The cost plugin owns them and sets them
 * before admission; the quota enforces them in the user scope's script. The seeds are the
 * month-to-date spend the ledger knows, to start a missing counter from.
 */
export interface MonthlyBudget {
  userLimitNano: bigint
  userSeedNano: bigint
  keyLimitNano: bigint
  keySeedNano: bigint
}

export type Outcome = 'ok' | 'error' | 'cancelled' | 'cached'
export type CacheStatus = 'HIT' | 'MISS' | 'BYPASS' | 'STALE' | 'NONE'

/** Phases start in this order (several subscribers of one phase in subscription order); `trace` waits for the rest. */
export const settlePhases = ['quota', 'ledger', 'cache', 'metrics', 'trace'] as const
export type SettlePhase = (typeof settlePhases)[number]

/** A step of the pipeline (auth, quota, cache lookup, an upstream attempt), for tracing. */
export interface Phase {
  name: string
  /** performance.now() at start and end. */
  start: number
  end: number
  attributes: Record<string, string | number | boolean>
}

export type SettleListener = (exchange: Exchange) => void | Promise<void>

export interface Settlement {
  outcome: Outcome
  status: number
  /** Error code when the outcome is an error or a cancellation. */
  errorCode?: string
}

/** Subscribers of settlement, registered once per app at plugin construction. */
export class SettlementHub {
  private readonly listeners: SettleListener[][] = settlePhases.map(() => [])
  private readonly onFailure: (phase: SettlePhase, error: unknown) => void

  constructor(onFailure: (phase: SettlePhase, error: unknown) => void = () => {}) {
    this.onFailure = onFailure
  }

  subscribe(phase: SettlePhase, listener: SettleListener): void {
    this.listeners[settlePhases.indexOf(phase)]!.push(listener)
  }

  /**
   * Starts every listener in phase order within one task, so the Redis writes of quota
   * reconciliation and cache store leave in the same socket write (one pipeline, as the
   * hot-path budget asks) instead of one round trip each; then the last phase (the span's
   * end) runs once they have all finished, so it measures the whole settlement. One
   * listener's failure is reported and never stops another.
   */
  async run(exchange: Exchange): Promise<void> {
    const last = settlePhases.length - 1
    const writes: Promise<void>[] = []
    for (let i = 0; i < last; i++) {
      for (const listener of this.listeners[i]!) writes.push(this.notify(i, listener, exchange))
    }
    await Promise.all(writes)
    for (const listener of this.listeners[last]!) await this.notify(last, listener, exchange)
  }

  private async notify(phase: number, listener: SettleListener, exchange: Exchange): Promise<void> {
    try {
      await listener(exchange)
    } catch (error) {
      this.onFailure(settlePhases[phase]!, error)
    }
  }
}

export class Exchange {
  readonly id: string
  readonly method: string
  readonly path: string
  /** performance.now() at the start of the request. */
  readonly startedAt: number
  /** Wall-clock start, for the ledger and the logs. */
  readonly startedAtDate: Date
  /** The route template (`/v1/chat/completions`), set by the route that owns the request. */
  route = ''
  principal: Principal | null = null
  requestedModel: string | null = null
  servedModel: string | null = null
  provider: string | null = null
  upstreamModel: string | null = null
  stream = false
  usage: Usage = { promptTokens: 0, completionTokens: 0, cachedTokens: 0 }
  /** Admission-time estimate, used by quota reservation before usage is known. */
  estimatedTokens = 0
  /** Set by the cost plugin before admission once its budgets are loaded; null: unknown yet. */
  monthlyBudget: MonthlyBudget | null = null
  /** The price of the model that serves; the route sets it when it resolves the model. */
  price: Price = freePrice
  /** Set at settlement from `price` and `usage`; zero for cached answers. */
  costNanoUsd = 0n
  /** For cached answers: what the upstream call would have cost. */
  savedNanoUsd = 0n
  cacheStatus: CacheStatus = 'NONE'
  attempts = 0
  fallbackSteps = 0
  firstTokenAt: number | null = null
  finishReasons: string[] = []
  /** Pipeline steps in the order they ended; tracing turns them into child spans. */
  readonly phases: Phase[] = []
  /** Headers every upstream call carries (request id; `traceparent` when tracing is on). */
  readonly upstreamHeaders: Record<string, string>
  /** Plugin-owned state keyed by plugin name (a quota reservation, a cache key...). */
  readonly notes = new Map<string, unknown>()
  settlement: Settlement | null = null
  settledAt: number | null = null
  /** Resolves when every settlement listener has run. */
  readonly settled: Promise<void>

  private readonly hub: SettlementHub
  private resolveSettled!: () => void

  constructor(hub: SettlementHub, init: { id: string; method: string; path: string; startedAt?: number }) {
    this.hub = hub
    this.id = init.id
    this.method = init.method
    this.path = init.path
    this.startedAt = init.startedAt ?? performance.now()
    this.startedAtDate = new Date()
    this.upstreamHeaders = { 'x-request-id': init.id }
    this.settled = new Promise((resolve) => {
      this.resolveSettled = resolve
    })
  }

  get isSettled(): boolean {
    return this.settlement !== null
  }

  get latencyMs(): number {
    return (this.settledAt ?? performance.now()) - this.startedAt
  }

  get ttftMs(): number | null {
    return this.firstTokenAt === null ? null : this.firstTokenAt - this.startedAt
  }

  /** Records a pipeline step that started at `start` (performance.now()) and ends now. */
  recordPhase(name: string, start: number, attributes: Phase['attributes'] = {}): void {
    this.phases.push({ name, start, end: performance.now(), attributes })
  }

  markFirstToken(): void {
    if (this.firstTokenAt === null) this.firstTokenAt = performance.now()
  }

  /**
   * Settles the exchange. Only the first call counts: a stream that ends and is then
   * cancelled, or an error after a finish, cannot settle twice. Listeners run after the
   * current task so the response is never held up by them. Returns whether this call settled.
   */
  settle(settlement: Settlement): boolean {
    if (this.settlement) return false
    this.settlement = settlement
    this.settledAt = performance.now()
    const cost = costOf(this.price, this.usage)
    if (settlement.outcome === 'cached') {
      this.savedNanoUsd = cost
      this.usage = { promptTokens: 0, completionTokens: 0, cachedTokens: 0 }
    } else {
      this.costNanoUsd = cost
    }
    setImmediate(() => {
      this.hub.run(this).then(this.resolveSettled, this.resolveSettled)
    })
    return true
  }
}
