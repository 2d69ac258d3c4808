/**
 * The breakers of every upstream target, one per target key. Each instance keeps its own
 * copy of every target's hash and makes every decision on it, synchronously: a call to a
 * closed breaker, and a rejection while open, touch no network. With Redis the same scripts
 * also run there, where every instance's outcomes meet; Redis's answers replace the local
 * copy, and a background refresh pulls what other instances did at least once a second.
 * Only a probe slot is asked of Redis on the request path, because "one probe at a time"
 * must hold across instances; when Redis is in trouble the local copy decides alone.
 * Successes of a closed breaker change nothing others must know at once: they are counted
 * here and sent in batches with the sync (record.lua says how stale that leaves the window).
 */
import { MemoryStore, type Store, type StoreScript } from '../store'
import { type ChainOutcome, type ChainStep, runChain } from './chain'
import { type GuardCall, type GuardResult, runGuarded } from './guard'
import { type BreakerEvent, BreakerMetrics, type BreakerStats } from './metrics'
import { type BreakerPolicy, WINDOW_BUCKETS } from './policy'
import {
  acquireScript,
  type Fields,
  fieldsOf,
  type Outcome,
  readScript,
  recordScript,
  type ScriptFields,
} from './scripts'
import { type BreakerView, stateOf, viewOf } from './view'

export type Sleep = (ms: number, signal: AbortSignal) => Promise<void>

export interface BreakerServiceOptions {
  enabled: boolean
  store: Store | null
  policy: BreakerPolicy
  targets: Record<string, BreakerPolicy>
  syncIntervalMs: number
  now: () => number
  sleep: Sleep
  random: () => number
  onEvent: (event: BreakerEvent) => void
}

/** What a call to a breaker's target gets: leave to call, or the moment to try again. */
export type Admission = { allowed: true; permit: Permit } | { allowed: false; retryAt: number }

/** What the breaker makes of a finished call. */
export type Verdict = 'success' | 'failure' | 'neutral'

const outcomes: Record<Verdict, Outcome> = { success: 's', failure: 'f', neutral: 'r' }

/** Leave for one call; its verdict is recorded once, whichever settle comes first. */
export class Permit {
  private settled = false

  constructor(
    private readonly service: BreakerService,
    readonly target: string,
    /** Whether the call holds one of a half-open breaker's probe slots. */
    readonly probe: boolean,
  ) {}

  settle(verdict: Verdict, reason = ''): void {
    if (this.settled) return
    this.settled = true
    // A call without a verdict (its client left) frees a probe slot and counts for nothing.
    if (verdict !== 'neutral' || this.probe)
      this.service.record(this.target, outcomes[verdict], this.probe, reason)
  }
}

interface Tracked {
  policy: BreakerPolicy
  /** Bumped by every change of the local copy: an answer asked for before it is out of date. */
  seq: number
  /**
   * Writes sent to Redis and not answered yet. An answer is adopted only when none is: Redis
   * may run a later command first (after a NOSCRIPT retry), so an answer with writes still
   * out may lack one of them.
   */
  pending: number
  /** Successes counted here and not sent to Redis yet, all of one window bucket. */
  batched: number
  /** When the first of them happened. */
  batchedAt: number
}

export const keyOf = (target: string) => `{b:${target}}`

/** When callers refused by a half-open breaker are told to try again. */
const HALF_OPEN_RETRY_MS = 1000

export class BreakerService {
  readonly metrics: BreakerMetrics
  private readonly local: MemoryStore
  private readonly tracked = new Map<string, Tracked>()
  private readonly timer: ReturnType<typeof setInterval> | undefined
  private refreshing: Promise<void> | null = null

  constructor(readonly options: BreakerServiceOptions) {
    this.metrics = new BreakerMetrics(options.onEvent)
    this.local = new MemoryStore({ now: options.now, sweepIntervalMs: 0 })
    for (const target of Object.keys(options.targets)) this.track(target)
    if (options.enabled && this.shared && options.syncIntervalMs > 0) {
      this.timer = setInterval(() => void this.refresh(), options.syncIntervalMs)
      this.timer.unref()
      void this.refresh()
    }
  }

  /** Whether state is shared through Redis (else every instance keeps its own). */
  get shared(): boolean {
    return this.options.store?.kind === 'redis'
  }

  get now(): () => number {
    return this.options.now
  }

  policyOf(target: string): BreakerPolicy {
    return this.track(target).policy
  }

  /** Decides whether a call may go to `target`; `leaseMs` bounds how long a probe may hold its slot. */
  async admit(target: string, leaseMs: number): Promise<Admission> {
    if (!this.options.enabled) return { allowed: true, permit: new Permit(this, target, false) }
    const entry = this.track(target)
    const fields = this.fields(target)
    const state = stateOf(fields)
    if (state === 'closed') return { allowed: true, permit: new Permit(this, target, false) }
    const view = viewOf(target, fields!, entry.policy, this.now())
    if (view.nextProbeAt !== null && view.nextProbeAt > this.now()) return this.reject(target, view)
    // A probe may be due: take a slot here, then where every instance competes for it.
    const args = [
      this.now(),
      Math.max(1, Math.min(leaseMs, entry.policy.maxCooldownMs)),
      entry.policy.halfOpenMaxProbes,
      ttlOf(entry.policy),
    ]
    let reply = this.runLocal(acquireScript, target, args)
    const store = this.options.store
    // Redis trouble (null): the local slot stands, so the breaker keeps working on this instance.
    if (reply[0] === 1 && this.shared && store?.available)
      reply = (await this.write(acquireScript, target, args)) ?? reply
    const verdict = Number(reply[0])
    if (verdict === 0) return this.reject(target, viewOf(target, fieldsOf(reply), entry.policy, this.now()))
    return { allowed: true, permit: new Permit(this, target, verdict === 1) }
  }

  /** Runs a call under the breaker with retries and timeouts (see guard.ts). */
  guard<T>(call: GuardCall<T>): Promise<GuardResult<T>> {
    return runGuarded(this, call)
  }

  /** Runs a fallback chain, each target under the guard, with one deadline (see chain.ts). */
  chain<T>(steps: ChainStep<T>[], deadline: number, signal: AbortSignal): Promise<ChainOutcome<T>> {
    return runChain(this, steps, deadline, signal)
  }

  /**
   * Records an outcome locally at once, and in Redis without waiting for it: a success of a
   * closed breaker joins the target's batch, which the next write or sync carries along.
   */
  record(target: string, outcome: Outcome, probe: boolean, reason: string): void {
    if (!this.options.enabled) return
    const entry = this.track(target)
    const now = this.now()
    const closed = stateOf(this.fields(target)) === 'closed'
    this.runLocal(recordScript, target, recordArgs(entry.policy, now, outcome, probe, reason))
    if (!this.shared || !this.options.store?.available) {
      // Outcomes of an outage are this instance's alone, as any write it could not send.
      entry.batched = 0
      return
    }
    if (outcome === 's' && !probe && closed) {
      // A batch stays within one bucket, so it lands where its successes belong.
      if (entry.batched > 0 && bucketOf(entry.policy, entry.batchedAt) !== bucketOf(entry.policy, now))
        void this.flush(target)
      if (entry.batched === 0) entry.batchedAt = now
      entry.batched++
      return
    }
    void this.send(target, now, outcome, probe, reason)
  }

  /** This instance's view of one target. */
  view(target: string): BreakerView {
    return viewOf(target, this.fields(target) ?? {}, this.policyOf(target), this.now())
  }

  /** Every known target, sorted by name. */
  list(): BreakerView[] {
    return [...this.tracked.keys()].sort().map((target) => this.view(target))
  }

  has(target: string): boolean {
    return this.tracked.has(target)
  }

  /** Closes one breaker (its window forgotten), here and in Redis; false for an unknown target. */
  async reset(target: string): Promise<boolean> {
    if (!this.tracked.has(target)) return false
    await this.resetKeys([target])
    return true
  }

  /** Closes every known breaker; returns how many there were. */
  async resetAll(): Promise<number> {
    const targets = [...this.tracked.keys()]
    await this.resetKeys(targets)
    return targets.length
  }

  /** Pulls every known target's state from Redis now; the background refresh calls it. */
  refresh(): Promise<void> {
    this.refreshing ??= this.pull().finally(() => {
      this.refreshing = null
    })
    return this.refreshing
  }

  stats(): BreakerStats {
    return this.metrics.stats()
  }

  /** Stops the sync; successes still batched are sent first, so none is lost on a clean stop. */
  async close(): Promise<void> {
    clearInterval(this.timer)
    if (this.shared && this.options.store?.available)
      await Promise.all([...this.tracked.keys()].map((target) => this.flush(target)))
    await this.local.close()
  }

  private async pull(): Promise<void> {
    const store = this.options.store
    if (!this.shared || !store?.available) {
      for (const entry of this.tracked.values()) entry.batched = 0
      return
    }
    await Promise.all(
      [...this.tracked].map(async ([target, entry]) => {
        // A target with a batch sends it instead of a read: the answer is the whole hash either way.
        if (entry.batched > 0) return void (await this.flush(target))
        const seq = entry.seq
        try {
          const reply = await store.run(readScript, [keyOf(target)], [])
          if (entry.pending === 0) this.adopt(target, reply, seq, 0)
        } catch {
          // this target keeps its local state until the next refresh
        }
      }),
    )
  }

  private async resetKeys(targets: string[]): Promise<void> {
    for (const target of targets) {
      this.track(target).batched = 0
      this.replace(target, {})
    }
    const store = this.options.store
    if (!this.shared || !store?.available || targets.length === 0) return
    try {
      await store.del(...targets.map(keyOf))
    } catch {
      // Redis trouble: this instance is reset; the others follow when they next refresh.
    }
  }

  /**
   * Refuses a call. An open breaker names the end of its cool-down; a half-open one whose
   * probe slots are taken will know within the probe's time, which the slot lease only
   * bounds (it may be minutes), so its callers are told to come back shortly.
   */
  private reject(target: string, view: BreakerView): Admission {
    this.metrics.emit({ type: 'rejected', target })
    const now = this.now()
    const retryAt =
      view.state === 'open'
        ? (view.nextProbeAt ?? now)
        : Math.min(view.nextProbeAt ?? now, now + HALF_OPEN_RETRY_MS)
    return { allowed: false, retryAt }
  }

  private track(target: string): Tracked {
    let entry = this.tracked.get(target)
    if (!entry) {
      const policy = this.options.targets[target] ?? this.options.policy
      entry = { policy, seq: 0, pending: 0, batched: 0, batchedAt: 0 }
      this.tracked.set(target, entry)
    }
    return entry
  }

  private fields(target: string): Fields | undefined {
    return this.local.data.get<Fields>(keyOf(target))
  }

  /** Runs a script's twin on the local copy, synchronously, and reports any state change. */
  private runLocal(
    script: StoreScript<ScriptFields>,
    target: string,
    args: Array<string | number>,
  ): ScriptFields {
    const before = stateOf(this.fields(target))
    const reply = script.runInMemory(this.local.data, [keyOf(target)], args.map(String), this.now())
    this.track(target).seq++
    this.transitioned(target, before)
    return reply
  }

  /** Sends the target's batch alone; nothing when it has none. */
  private async flush(target: string): Promise<void> {
    if (this.track(target).batched > 0) await this.send(target, this.now(), 'n', false, '')
  }

  /** Records an outcome in Redis (its twin ran here already), carrying and emptying the batch. */
  private send(target: string, now: number, outcome: Outcome, probe: boolean, reason: string) {
    const entry = this.track(target)
    const args = recordArgs(entry.policy, now, outcome, probe, reason, entry.batched, entry.batchedAt)
    entry.batched = 0
    return this.write(recordScript, target, args)
  }

  /** Runs a script in Redis after its twin ran here; adopts the answer when it is current, null on trouble. */
  private async write(
    script: StoreScript<ScriptFields>,
    target: string,
    args: Array<string | number>,
  ): Promise<ScriptFields | null> {
    const entry = this.track(target)
    const seq = entry.seq
    entry.pending++
    try {
      const reply = await this.options.store!.run(script, [keyOf(target)], args)
      if (entry.pending === 1) this.adopt(target, reply, seq, 1)
      return reply
    } catch {
      return null
    } finally {
      entry.pending--
    }
  }

  /** Replaces the local copy with Redis's, unless the copy changed since it was asked. */
  private adopt(target: string, reply: ScriptFields, seq: number, from: number): void {
    if (this.track(target).seq !== seq) return
    const fields: Fields = {}
    for (const [field, value] of Object.entries(fieldsOf(reply, from)))
      fields[field] = field === 'failure' ? String(value) : Number(value)
    this.replace(target, fields)
  }

  private replace(target: string, fields: Fields): void {
    const before = stateOf(this.fields(target))
    const entry = this.track(target)
    entry.seq++
    this.local.data.set(keyOf(target), fields, ttlOf(entry.policy))
    this.transitioned(target, before)
  }

  private transitioned(target: string, before: ReturnType<typeof stateOf>): void {
    const after = stateOf(this.fields(target))
    if (after !== before) this.metrics.emit({ type: 'transition', target, from: before, to: after })
  }
}

/** record.lua's arguments; `batched` successes (from `batchedAt`) ride along with the outcome. */
function recordArgs(
  p: BreakerPolicy,
  now: number,
  outcome: Outcome,
  probe: boolean,
  reason: string,
  batched = 0,
  batchedAt = now,
): Array<string | number> {
  return [
    now,
    outcome,
    probe ? 1 : 0,
    reason,
    p.windowMs,
    WINDOW_BUCKETS,
    p.failureThreshold,
    p.failureRateThreshold,
    p.minimumCalls,
    p.cooldownMs,
    p.maxCooldownMs,
    p.successThreshold,
    ttlOf(p),
    batched,
    batchedAt,
  ]
}

const bucketOf = (p: BreakerPolicy, at: number) => Math.floor(at / (p.windowMs / WINDOW_BUCKETS))

/** A hash outlives the longest open period and a full window, then expires unused. */
function ttlOf(policy: BreakerPolicy): number {
  return policy.windowMs + 2 * policy.maxCooldownMs
}
