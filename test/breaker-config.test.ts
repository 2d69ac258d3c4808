/**
 * The `breaker:` config section: defaults as the issue gives them, overrides per provider
 * then per model, and precise errors for names that do not exist or limits that contradict.
 */
import { describe, expect, test } from 'bun:test'
import { defaultBreakerPolicy, defaultRetryPolicy, defaultTimeouts } from '../plugins/breaker'
import { buildConfig, ConfigError } from '../src/config'

const models = {
  'm-1': { provider: 'sim', pricing: { input: 1, output: 1 } },
  'm-2': { provider: 'sim', upstream_model: 'other', pricing: { input: 1, output: 1 } },
}

describe('breaker config', () => {
  test('defaults: 5 failures or 50 % of 10 calls in 60 s, 30 s cool-down up to 5 min, 1 probe, 2 successes', () => {
    const { breaker } = buildConfig({}, { models })
    expect(breaker.policy).toEqual({
      windowMs: 60_000,
      failureThreshold: 5,
      failureRateThreshold: 0.5,
      minimumCalls: 10,
      cooldownMs: 30_000,
      maxCooldownMs: 300_000,
      halfOpenMaxProbes: 1,
      successThreshold: 2,
    })
    expect(breaker.policy).toEqual(defaultBreakerPolicy)
    expect(breaker.models['m-1']).toEqual({ retry: defaultRetryPolicy, timeouts: defaultTimeouts })
    expect(breaker.targets['sim:m-1']).toEqual(defaultBreakerPolicy)
    expect(breaker.syncIntervalMs).toBe(500)
    expect(breaker.staleCache).toBe(true)
  })

  test('a model overrides its provider, which overrides the section', () => {
    const { breaker } = buildConfig(
      {},
      {
        models,
        breaker: {
          cooldown_ms: 10_000,
          timeouts: { ttft_ms: 20_000 },
          providers: { sim: { failure_threshold: 3, timeouts: { idle_ms: 5_000 } } },
          models: {
            'm-2': { failure_threshold: 9, retries: { max_retries: 0 }, timeouts: { ttft_ms: 1_000 } },
          },
        },
      },
    )
    expect(breaker.targets['sim:m-1']).toMatchObject({ cooldownMs: 10_000, failureThreshold: 3 })
    expect(breaker.targets['sim:other']).toMatchObject({ cooldownMs: 10_000, failureThreshold: 9 })
    expect(breaker.models['m-1']!.timeouts).toEqual({ ...defaultTimeouts, ttftMs: 20_000, idleMs: 5_000 })
    expect(breaker.models['m-2']).toEqual({
      retry: { ...defaultRetryPolicy, maxRetries: 0 },
      timeouts: { ...defaultTimeouts, ttftMs: 1_000, idleMs: 5_000 },
    })
  })

  test('unknown names, unknown keys and contradicting limits are config errors', () => {
    const fails = (breaker: Record<string, unknown>, message: string) =>
      expect(() => buildConfig({}, { models, breaker })).toThrow(new ConfigError(message))
    fails({ providers: { nope: {} } }, 'config: breaker.providers.nope: no provider named "nope"')
    fails({ models: { nope: {} } }, 'config: breaker.models.nope: no model named "nope"')
    fails({ cooldown_ms: 600_000 }, 'config: breaker: cooldown_ms of sim-1 exceeds its max_cooldown_ms')
    fails({ retry: 1 }, 'config: breaker.retry: is not a known setting')
    fails(
      { sync_interval_ms: 5_000 },
      'config: breaker.sync_interval_ms: expected integer to be less or equal to 1000',
    )
  })
})
