/**
 * Startup before the dependencies answer. In a rollout the gateway often starts before
 * Postgres or Redis accepts connections; instead of exiting (and crash-looping), it waits
 * while a placeholder server answers the probes: live 200, startup 503 naming what it waits
 * for (with the attempts so far and the last error), everything else 503.
 *
 * The two waits end differently, because only one dependency has a fallback. Postgres holds
 * the keys: without it nothing can be authenticated, so startup waits for it as long as it
 * takes, and the orchestrator's startup probe decides when that is too long. Redis has
 * fallbacks (local quota limits, no shared cache), so startup waits for it only up to a bound
 * and then serves degraded, picking Redis up when it answers.
 */
import type { Server } from 'bun'
import { log } from './log'

export interface StartupState {
  /** What startup is waiting for, for /health/startup; null once it waits for nothing. */
  waitingFor: string | null
  /** Attempts made so far at what it is waiting for. */
  attempts: number
  lastError: string | null
}

export function serveStartupProbes(port: number, hostname: string, state: StartupState): Server<undefined> {
  return Bun.serve({
    port,
    hostname,
    fetch(request) {
      const path = new URL(request.url).pathname
      if (path === '/health/live') return Response.json({ status: 'ok' })
      const waiting = `starting: waiting for ${state.waitingFor ?? 'the application'}`
      if (path === '/health/startup')
        return Response.json(
          {
            status: 'starting',
            message: waiting,
            waiting_for: state.waitingFor,
            attempts: state.attempts,
            error: state.lastError,
          },
          { status: 503 },
        )
      const problem = {
        type: 'about:blank',
        title: 'Service Unavailable',
        status: 503,
        detail: waiting,
        instance: path,
      }
      return Response.json(problem, {
        status: 503,
        headers: { 'content-type': 'application/problem+json', 'retry-after': '1' },
      })
    },
  })
}

export interface BackoffOptions {
  /**
   * First wait between attempts, in ms; it doubles up to `maxDelayMs`.
   * @default 250
   */
  initialDelayMs?: number
  /**
   * Longest wait between attempts, in ms.
   * @default 5000
   */
  maxDelayMs?: number
}

/**
 * The one wait-with-backoff both startup waits run: calls `attempt` with the current step
 * (which doubles up to `maxDelayMs`) until it answers true, or until `maxWaitMs` has passed.
 * An attempt may take up to its step (a self-connecting dependency waits that long for its
 * answer); one that fails sooner is followed by the rest of the step, so attempts start at
 * most once per step. `attempt` reports why it failed by returning its error.
 */
async function withBackoff(
  what: string,
  state: StartupState,
  attempt: (stepMs: number) => Promise<true | { error: unknown }>,
  maxWaitMs: number,
  { initialDelayMs = 250, maxDelayMs = 5000 }: BackoffOptions,
): Promise<boolean> {
  state.waitingFor = what
  state.attempts = 0
  state.lastError = null
  const deadline = performance.now() + maxWaitMs
  let answered = false
  for (let step = initialDelayMs; ; step = Math.min(step * 2, maxDelayMs)) {
    state.attempts++
    const started = performance.now()
    const outcome = await attempt(Math.min(step, Math.max(0, deadline - started)))
    if (outcome === true) {
      answered = true
      break
    }
    const { error } = outcome
    state.lastError = error instanceof Error ? error.message : String(error ?? 'no answer')
    if (performance.now() >= deadline) {
      log.warn(`gave up waiting for ${what}`, {
        attempts: state.attempts,
        waited_ms: maxWaitMs,
        error: state.lastError,
      })
      break
    }
    const rest = Math.min(started + step, deadline) - performance.now()
    log.warn(`waiting for ${what}`, {
      attempt: state.attempts,
      retry_in_ms: Math.max(0, Math.round(rest)),
      error: state.lastError,
    })
    if (rest > 0) await Bun.sleep(rest)
  }
  state.waitingFor = null
  state.attempts = 0
  state.lastError = null
  return answered
}

/** Calls `open` until it succeeds, waiting with capped exponential backoff between attempts. */
export async function openWithBackoff<T>(
  what: string,
  open: () => Promise<T>,
  state: StartupState,
  options: BackoffOptions = {},
): Promise<T> {
  let opened: T | undefined
  await withBackoff(
    what,
    state,
    async () => {
      try {
        opened = await open()
        return true
      } catch (error) {
        return { error }
      }
    },
    Number.POSITIVE_INFINITY,
    options,
  )
  return opened as T
}

/** A dependency that connects by itself in the background, as the Redis store does. */
export interface SelfConnecting {
  /** Resolves true once it answers, false if that takes longer than `timeoutMs`. */
  waitUntilAvailable(timeoutMs: number): Promise<boolean>
  /** Why it does not answer. */
  readonly lastError: unknown
}

/**
 * Waits up to `maxWaitMs` for `dependency` to answer, checking with capped exponential
 * backoff (each check returns the moment it answers, so nothing waits a full step for
 * nothing). Resolves whether it answered in time; never rejects.
 */
export function waitUntilAvailable(
  what: string,
  dependency: SelfConnecting,
  state: StartupState,
  maxWaitMs: number,
  options: BackoffOptions = {},
): Promise<boolean> {
  return withBackoff(
    what,
    state,
    async (stepMs) => (await dependency.waitUntilAvailable(stepMs)) || { error: dependency.lastError },
    maxWaitMs,
    options,
  )
}
