/**
 * The knobs of resilience, each with its default: when a breaker opens and recovers, how a
 * failed call is retried, and how long each phase of a call may take. Plain data, so config
 * can resolve them per target (breaker) and per model (retries, timeouts) once, at startup.
 */

export interface BreakerPolicy {
  /**
   * Length of the rolling window failures and calls are counted in.
   * @default 60000
   */
  windowMs: number
  /**
   * Failures within the window that open the breaker; 0 disables the count rule.
   * @default 5
   */
  failureThreshold: number
  /**
   * Share of failed calls (0..1) within the window that opens the breaker, once the window
   * holds `minimumCalls`; 0 disables the rate rule.
   * @default 0.5
   */
  failureRateThreshold: number
  /**
   * Calls the window must hold before the rate rule applies.
   * @default 10
   */
  minimumCalls: number
  /**
   * How long an opened breaker rejects calls before it lets a probe through.
   * @default 30000
   */
  cooldownMs: number
  /**
   * Cap of the cool-down, which doubles on every failed probe.
   * @default 300000
   */
  maxCooldownMs: number
  /**
   * Probes a half-open breaker lets through at the same time.
   * @default 1
   */
  halfOpenMaxProbes: number
  /**
   * Successful probes in a row that close a half-open breaker.
   * @default 2
   */
  successThreshold: number
}

export interface RetryPolicy {
  /**
   * Attempts after the first, on retryable failures only, before the first byte is sent.
   * @default 2
   */
  maxRetries: number
  /**
   * Base of the exponential backoff (full jitter: a random wait up to base * 2^retry).
   * @default 250
   */
  backoffBaseMs: number
  /**
   * Cap of the backoff before jitter.
   * @default 4000
   */
  backoffCapMs: number
  /**
   * Longest upstream Retry-After the guard waits for; a longer one ends the attempts on
   * that target (the next fallback serves), since retrying sooner would only be refused.
   * @default 5000
   */
  retryAfterCapMs: number
}

/** Limits of one call's phases, in ms; 0 turns a limit off. */
export interface TimeoutLimits {
  /**
   * From the start of an attempt until the upstream's response headers arrive.
   * @default 5000
   */
  connectMs: number
  /**
   * From the start of an attempt until the first chunk of a stream.
   * @default 30000
   */
  ttftMs: number
  /**
   * Longest gap between two chunks of a stream (time the client takes is not counted).
   * @default 30000
   */
  idleMs: number
  /**
   * The whole request, every attempt and fallback included; also the retries' deadline.
   * @default 600000
   */
  totalMs: number
}

export const defaultBreakerPolicy: BreakerPolicy = {
  windowMs: 60_000,
  failureThreshold: 5,
  failureRateThreshold: 0.5,
  minimumCalls: 10,
  cooldownMs: 30_000,
  maxCooldownMs: 300_000,
  halfOpenMaxProbes: 1,
  successThreshold: 2,
}

export const defaultRetryPolicy: RetryPolicy = {
  maxRetries: 2,
  backoffBaseMs: 250,
  backoffCapMs: 4_000,
  retryAfterCapMs: 5_000,
}

export const defaultTimeouts: TimeoutLimits = {
  connectMs: 5_000,
  ttftMs: 30_000,
  idleMs: 30_000,
  totalMs: 600_000,
}

/** Buckets of the rolling window: counts age out a tenth of the window at a time. */
export const WINDOW_BUCKETS = 10
