/**
 * Circuit breakers, retries and timeouts around upstream calls; the plugin's only door.
 * It knows nothing of providers: a target is an opaque name (the application uses
 * `provider:upstream_model`), and the caller of the guard says what its errors mean. The
 * application wraps every upstream call in `breakers.guard`, mounts `breakerAdmin` under
 * `/admin` and adds `breakerHealthCheck` to readiness.
 */
import { Elysia } from 'elysia'
import type { Store } from '../store'
import type { BreakerEvent } from './metrics'
import { type BreakerPolicy, defaultBreakerPolicy } from './policy'
import { BreakerService, type Sleep } from './service'

export { breakerAdmin } from './admin'
export type { ChainOutcome, ChainStep } from './chain'
export type { FailureInfo, GuardCall, GuardResult, HeldStream } from './guard'
export { backoffMs, guardStream } from './guard'
export { type BreakerHealthCheck, breakerHealthCheck } from './health'
export type { BreakerEvent, BreakerStats } from './metrics'
export type { BreakerPolicy, RetryPolicy, TimeoutLimits } from './policy'
export { defaultBreakerPolicy, defaultRetryPolicy, defaultTimeouts } from './policy'
export type { Admission, Sleep, Verdict } from './service'
export { BreakerService, Permit } from './service'
export { CallTimer, TimeoutError, type TimeoutKind } from './timeouts'
export type { BreakerState, BreakerView } from './view'

export interface BreakerOptions {
  /**
   * Off, no breaker opens: every call goes to its target, and nothing is recorded or shared.
   * Retries, timeouts and fallbacks still apply.
   * @default true
   */
  enabled?: boolean
  /**
   * Where breaker state is shared: with a Redis store every instance opens and closes
   * together; a memory store (or none) keeps every breaker per instance.
   * @default null
   */
  store?: Store | null
  /**
   * The policy of every target without its own.
   * @default defaultBreakerPolicy
   */
  policy?: Partial<BreakerPolicy>
  /**
   * Policies per target (complete, as config resolves them); these targets are also known
   * from the start, so they are listed and refreshed before their first call.
   * @default {}
   */
  targets?: Record<string, BreakerPolicy>
  /**
   * How often shared state is pulled from Redis; bounds how stale an instance's copy is.
   * @default 500
   */
  syncIntervalMs?: number
  /**
   * Clock in epoch ms; tests inject one to drive windows and cool-downs.
   * @default Date.now
   */
  now?: () => number
  /**
   * The wait between retries; tests inject one that advances their clock instead.
   * @default an abortable timer
   */
  sleep?: Sleep
  /**
   * Source of the backoff's jitter, in [0, 1).
   * @default Math.random
   */
  random?: () => number
  /**
   * Called with every transition, rejection, retry, timeout, fallback and stale answer.
   * @default () => {}
   */
  onEvent?: (event: BreakerEvent) => void
}

/** Resolves after `ms`, or as soon as `signal` aborts. */
export const abortableSleep: Sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const done = () => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })

export function createBreakers({
  enabled = true,
  store = null,
  policy = {},
  targets = {},
  syncIntervalMs = 500,
  now = Date.now,
  sleep = abortableSleep,
  random = Math.random,
  onEvent = () => {},
}: BreakerOptions = {}): BreakerService {
  return new BreakerService({
    enabled,
    store,
    policy: { ...defaultBreakerPolicy, ...policy },
    targets,
    syncIntervalMs,
    now,
    sleep,
    random,
    onEvent,
  })
}

/** The plugin: decorates `breakers` (the service) and closes it with the app. */
export function breaker(options: BreakerOptions = {}) {
  const service = createBreakers(options)
  return new Elysia({ name: 'tollgate/breaker', seed: { targets: Object.keys(options.targets ?? {}) } })
    .decorate('breakers', service)
    .onStop(function closeBreakers() {
      return service.close()
    })
}
