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

function begin(state: StartupState, what: string): void {
  state.waitingFor = what
  state.attempts = 0
  state.lastError = null
}

function end(state: StartupState): void {
  state.waitingFor = null
  state.attempts = 0
  state.lastError = null
}

/** Calls `open` until it succeeds, waiting with capped exponential backoff between attempts. */
export async function openWithBackoff<T>(
  what: string,
  open: () => Promise<T>,
  state: StartupState,
  { initialDelayMs = 250, maxDelayMs = 5000 }: BackoffOptions = {},
): Promise<T> {
  begin(state, what)
  for (let delay = initialDelayMs; ; delay = Math.min(delay * 2, maxDelayMs)) {
    state.attempts++
    try {
      const opened = await open()
      end(state)
      return opened
    } catch (error) {
      state.lastError = (error as Error).message
      log.warn(`waiting for ${what}`, { attempt: state.attempts, retry_in_ms: delay, error: state.lastError })
      await Bun.sleep(delay)
    }
  }
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
export async function waitUntilAvailable(
  what: string,
  dependency: SelfConnecting,
  state: StartupState,
  maxWaitMs: number,
  { initialDelayMs = 250, maxDelayMs = 5000 }: BackoffOptions = {},
): Promise<boolean> {
  begin(state, what)
  const deadline = performance.now() + maxWaitMs
  for (let delay = initialDelayMs; ; delay = Math.min(delay * 2, maxDelayMs)) {
    state.attempts++
    const left = Math.max(0, deadline - performance.now())
    if (await dependency.waitUntilAvailable(Math.min(delay, left))) {
      end(state)
      return true
    }
    const error = dependency.lastError
    state.lastError = error instanceof Error ? error.message : String(error ?? 'no answer')
    if (performance.now() >= deadline) {
      log.warn(`gave up waiting for ${what}`, {
        attempts: state.attempts,
        waited_ms: maxWaitMs,
        error: state.lastError,
      })
      end(state)
      return false
    }
    log.warn(`waiting for ${what}`, { attempt: state.attempts, error: state.lastError })
  }
}
