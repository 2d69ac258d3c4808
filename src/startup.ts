/**
 * Startup before the dependencies answer. In a rollout the gateway often starts before
 * Postgres accepts connections; instead of exiting (and crash-looping), it retries with
 * capped exponential backoff while a placeholder server answers the probes: live 200,
 * startup 503 naming what it waits for, everything else 503. Redis needs none of this: its
 * store connects in the background and quotas fall back until it answers.
 */
import type { Server } from 'bun'
import { log } from './log'

export interface StartupState {
  /** What startup is waiting for, for /health/startup; null once it waits for nothing. */
  waitingFor: string | null
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
          { status: 'starting', message: waiting, error: state.lastError },
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

/** Calls `open` until it succeeds, waiting with capped exponential backoff between attempts. */
export async function openWithBackoff<T>(
  what: string,
  open: () => Promise<T>,
  state: StartupState,
  { initialDelayMs = 250, maxDelayMs = 5000 }: BackoffOptions = {},
): Promise<T> {
  state.waitingFor = what
  for (let delay = initialDelayMs, attempt = 1; ; attempt++, delay = Math.min(delay * 2, maxDelayMs)) {
    try {
      const opened = await open()
      state.waitingFor = null
      state.lastError = null
      return opened
    } catch (error) {
      state.lastError = (error as Error).message
      log.warn(`waiting for ${what}`, { attempt, retry_in_ms: delay, error: state.lastError })
      await Bun.sleep(delay)
    }
  }
}
