/**
 * Admission and reconciliation. A request reserves against its user's scope and the global
 * scope with two scripts issued in the same tick, which node-redis pipelines into one
 * round trip. Settlement replaces the reservation with what was used, off the critical path.
 *
 * When Redis cannot answer, the configured fallback takes over at once (no request waits on
 * a dead socket): `local` runs the same scripts on an in-process store, `open` admits,
 * `closed` denies. Enforcement returns to Redis by itself as soon as the store is available.
 */
import { ApiError, costOf, type Exchange, type MonthlyBudget, type Principal } from '../exchange'
import { MemoryStore, type ScriptArg, type Store, type StoreScript } from '../store'
import { denial, deniedLimitName, windowStates } from './denial'
import { rateLimitHeaders, type WindowState } from './headers'
import {
  type GlobalLimits,
  globalLimits,
  type MonthReservation,
  monthAdmitArgs,
  monthReply,
  monthSettleArgs,
  type ScopeLimits,
  type TierLimits,
  userLimits,
} from './limits'
import { type AdmitReply, admitScript, settleScript } from './scripts'

export type QuotaFallback = 'local' | 'open' | 'closed'
export type Backend = 'store' | 'local' | 'open'

export interface QuotaDecision {
  limit: string
  outcome: 'admitted' | 'denied' | 'fallback_open' | 'unavailable'
}

export interface QuotaServiceOptions {
  enabled: boolean
  store: Store
  tiers: Record<string, TierLimits>
  global: GlobalLimits
  fallback: QuotaFallback
  routeWeights: Record<string, number>
  defaultMaxTokens: number
  leaseTtlMs: number
  refundRequestsOnError: boolean
  now: (() => number) | null
  onDecision: (decision: QuotaDecision, seconds: number) => void
  onFallback: (active: boolean) => void
}

interface ScopeReservation {
  limits: ScopeLimits
  day: number
  /** The user scope's hold on monthly budget counters, when the request has budgets. */
  month?: MonthReservation
}

export interface Reservation {
  backend: Backend
  leaseId: string
  weight: number
  tokens: number
  costNano: bigint
  scopes: ScopeReservation[]
}

export interface ScopeUsage {
  limits: ScopeLimits
  windows: WindowState[]
  tokensUsed: number
  costUsedNano: bigint
  concurrentUsed: number
  /** Monthly budget counters (reservations included), when budgets were given. */
  month: { month: number; userUsedNano: bigint; keyUsedNano: bigint } | null
}

const note = 'quota'

export class QuotaService {
  private readonly local: MemoryStore
  /** The global scope's limits, its script arguments included: the same for every request. */
  private readonly global: ScopeLimits
  /**
   * Each principal's user-scope limits, built on its first request. The auth plugin's key
   * cache hands out one Principal object per key until it reloads the key (a new object),
   * so a changed tier or override is never served from here.
   */
  private readonly userScopes = new WeakMap<Principal, ScopeLimits>()
  private fallbackActive = false

  constructor(private readonly options: QuotaServiceOptions) {
    this.local = new MemoryStore({ now: options.now ?? Date.now })
    this.global = globalLimits(options.global)
  }

  /** The script argument for "now": '' lets Redis read its own clock; tests inject one. */
  private nowArg(): string {
    return this.options.now ? String(this.options.now()) : ''
  }

  private async runScript<R extends AdmitReply | number>(
    backend: Backend,
    script: StoreScript<R>,
    keys: string[],
    args: ScriptArg[],
  ): Promise<R> {
    return (backend === 'store' ? this.options.store : this.local).run(script, keys, args)
  }

  /** The store while it is available, else the configured fallback (`closed` included). */
  private chooseBackend(): Backend | 'closed' {
    const healthy = this.options.store.available
    if (healthy !== !this.fallbackActive) {
      this.fallbackActive = !healthy
      this.options.onFallback(this.fallbackActive)
    }
    return healthy ? 'store' : this.options.fallback
  }

  get fallbackEngaged(): boolean {
    return this.fallbackActive
  }

  private admitArgs(
    limits: ScopeLimits,
    r: Omit<Reservation, 'scopes' | 'backend'>,
    dryRun: boolean,
    month: string[] = [],
  ) {
    return [
      this.nowArg(),
      dryRun ? '1' : '0',
      r.leaseId,
      this.options.leaseTtlMs,
      r.weight,
      limits.concurrent,
      // Tokens and cost are counted even without a budget, so /v1/usage reports them.
      limits.tokensPerDay,
      r.tokens,
      limits.costPerDayNano.toString(),
      r.costNano.toString(),
      ...limits.windowArgs,
      ...month,
    ]
  }

  private userScope(principal: Principal): ScopeLimits {
    let limits = this.userScopes.get(principal)
    if (!limits) {
      limits = userLimits(principal, this.options.tiers)
      this.userScopes.set(principal, limits)
    }
    return limits
  }

  private scopesFor(exchange: Exchange): ScopeLimits[] {
    return [this.userScope(exchange.principal!), this.global]
  }

  /** Reserves for a model request, or throws the 429 that names the limit that denied. */
  async reserve(exchange: Exchange, maxTokens: number | null): Promise<Record<string, string>> {
    if (!this.options.enabled) return {}
    const started = performance.now()
    const completionCap = maxTokens ?? this.options.defaultMaxTokens
    const request = {
      // Not the request id: a client may send the same x-request-id twice, and one lease
      // would then cover two requests (and the first to settle would free both).
      leaseId: crypto.randomUUID(),
      weight: this.options.routeWeights[exchange.route] ?? 1,
      tokens: exchange.estimatedTokens + completionCap,
      costNano: costOf(exchange.price, {
        promptTokens: exchange.estimatedTokens,
        completionTokens: completionCap,
        cachedTokens: 0,
      }),
    }
    const scopes = this.scopesFor(exchange)
    // Monthly budgets belong to the user scope (scopes[0]); the cost plugin attaches them.
    const budget = exchange.monthlyBudget
    const keyId = exchange.principal!.keyId
    const month = budget ? monthAdmitArgs(keyId, budget, request.costNano) : []
    const admit = (backend: 'store' | 'local') =>
      Promise.all(
        scopes.map((limits, i) =>
          this.runScript(
            backend,
            admitScript,
            limits.keys,
            this.admitArgs(limits, request, false, i === 0 ? month : []),
          ),
        ),
      )
    let backend = this.chooseBackend()
    let replies: AdmitReply[] | undefined
    if (backend === 'store') {
      try {
        replies = await admit('store')
      } catch {
        // The store failed under this request: the fallback decides it, at once.
        backend = this.options.fallback
      }
    }
    if (backend === 'closed') {
      this.options.onDecision({ limit: 'all', outcome: 'unavailable' }, (performance.now() - started) / 1000)
      throw new ApiError({
        status: 503,
        message: 'Quota service unavailable; retry shortly.',
        code: 'quota_unavailable',
        headers: { 'retry-after': '1' },
      })
    }
    if (backend === 'open') {
      this.options.onDecision({ limit: 'all', outcome: 'fallback_open' }, 0)
      return {}
    }
    const decidedOn = backend
    const answers = replies ?? (await admit(decidedOn))
    const seconds = (performance.now() - started) / 1000
    const heldMonth = budget && answers[0]![0] === 1 ? monthReply(scopes[0]!, answers[0]!) : null
    const monthHold: MonthReservation | undefined =
      budget && heldMonth
        ? {
            month: heldMonth.month,
            keyId,
            user: budget.userLimitNano > 0n,
            key: budget.keyLimitNano > 0n,
            reserveNano: request.costNano,
          }
        : undefined
    // Of several scopes that deny, the one that frees last, for an honest Retry-After.
    let deniedAt = -1
    answers.forEach((reply, i) => {
      if (reply[0] !== 1 && (deniedAt < 0 || reply[2] > answers[deniedAt]![2])) deniedAt = i
    })
    if (deniedAt >= 0) {
      answers.forEach((reply, i) => {
        if (reply[0] === 1)
          void this.release(
            decidedOn,
            scopes[i]!,
            reply[3],
            request.leaseId,
            request,
            true,
            undefined,
            i === 0 ? monthHold : undefined,
          )
      })
      const limits = scopes[deniedAt]!
      const reply = answers[deniedAt]!
      this.options.onDecision({ limit: deniedLimitName(limits, reply[1]), outcome: 'denied' }, seconds)
      // The headers always describe the caller's own windows, whichever scope denied.
      throw denial(limits, reply, windowStates(scopes[0]!, answers[0]!), budget)
    }
    this.options.onDecision({ limit: 'all', outcome: 'admitted' }, seconds)
    const reservation: Reservation = {
      ...request,
      backend: decidedOn,
      scopes: scopes.map((limits, i) => ({
        limits,
        day: answers[i]![3],
        ...(i === 0 && monthHold ? { month: monthHold } : {}),
      })),
    }
    exchange.notes.set(note, reservation)
    return rateLimitHeaders(windowStates(scopes[0]!, answers[0]!))
  }

  private release(
    backend: Backend,
    limits: ScopeLimits,
    day: number,
    leaseId: string,
    used: { weight: number; tokens: number; costNano: bigint },
    refundRequests: boolean,
    actual = { tokens: 0, costNano: 0n },
    month?: MonthReservation,
  ): Promise<unknown> {
    const args = [
      this.nowArg(),
      limits.concurrent > 0 ? leaseId : '',
      day,
      actual.tokens - used.tokens,
      (actual.costNano - used.costNano).toString(),
      refundRequests ? used.weight : 0,
      ...limits.windowArgs,
      ...(month && (month.user || month.key) ? monthSettleArgs(month, actual.costNano) : []),
    ]
    return this.runScript(backend, settleScript, limits.keys, args).catch(() => undefined)
  }

  /** Settlement: actual usage replaces the reservation; the lease is released. */
  async reconcile(exchange: Exchange): Promise<void> {
    const reservation = exchange.notes.get(note) as Reservation | undefined
    if (!reservation || reservation.backend === 'open') return
    const outcome = exchange.settlement?.outcome
    const actual = {
      tokens: exchange.usage.promptTokens + exchange.usage.completionTokens,
      costNano: exchange.costNanoUsd,
    }
    const refundRequests = outcome === 'error' && this.options.refundRequestsOnError
    await Promise.all(
      reservation.scopes.map(({ limits, day, month }) =>
        this.release(
          reservation.backend,
          limits,
          day,
          reservation.leaseId,
          reservation,
          refundRequests,
          actual,
          month,
        ),
      ),
    )
  }

  /** The caller's windows, budgets and leases, without reserving anything. */
  async usage(principal: Exchange['principal'] & object, budget?: MonthlyBudget): Promise<ScopeUsage> {
    const limits = this.userScope(principal)
    const backend = this.chooseBackend() === 'store' ? 'store' : 'local'
    const month = budget ? monthAdmitArgs(principal.keyId, budget, 0n) : []
    const args = this.admitArgs(limits, { leaseId: '', weight: 0, tokens: 0, costNano: 0n }, true, month)
    const reply = await this.runScript(backend, admitScript, limits.keys, args)
    return {
      limits,
      windows: windowStates(limits, reply),
      tokensUsed: reply[4],
      costUsedNano: BigInt(Math.round(reply[5])),
      concurrentUsed: reply[6],
      month: budget ? monthReply(limits, reply) : null,
    }
  }

  /** Clears a user's windows, budgets and leases; returns what existed. */
  async reset(principal: Exchange['principal'] & object): Promise<string[]> {
    const limits = this.userScope(principal)
    const keys = limits.keys
    const cleared: string[] = []
    for (const store of [this.options.store, this.local]) {
      try {
        if ((await store.del(...keys)) > 0) cleared.push(store === this.local ? 'local' : 'store')
      } catch {
        // A store that cannot answer has nothing to clear right now; the other one still does.
      }
    }
    return cleared
  }

  async close(): Promise<void> {
    await this.local.close()
  }
}
