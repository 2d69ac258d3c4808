/**
 * The resilience layer on real parts for tests and the benchmark: OpenAIProviders over HTTP
 * to simulator servers, the model router and breakers built from a Config (so the config
 * mapping is exercised too), and a clock that tests move by hand, whose sleep advances it.
 */
import { type BreakerService, createBreakers } from '../../plugins/breaker'
import { Exchange, freePrice, priceFromUsdPerMillion, SettlementHub } from '../../plugins/exchange'
import type { Store } from '../../plugins/store'
import { buildConfig, type Config } from '../../src/config'
import type { ChatRequest } from '../../src/upstream/provider'
import { Resilience } from '../../src/upstream/resilient'
import { createProviders, ModelRouter } from '../../src/upstream/router'

export interface FakeClock {
  now(): number
  advance(ms: number): void
  /** Every wait asked for, in order. */
  sleeps: number[]
  /** Advances the clock by `ms` at once instead of waiting. */
  sleep(ms: number, signal: AbortSignal): Promise<void>
}

export function fakeClock(start = Date.UTC(2030, 0, 1)): FakeClock {
  let now = start
  const sleeps: number[] = []
  return {
    now: () => now,
    advance(ms) {
      now += ms
    },
    sleeps,
    async sleep(ms) {
      sleeps.push(ms)
      now += ms
    },
  }
}

export interface Rig {
  config: Config
  breakers: BreakerService
  resilience: Resilience
  close(): Promise<void>
}

export interface RigOptions {
  /** The config file: providers, models, breaker section. */
  file: Record<string, unknown>
  clock?: FakeClock
  store?: Store | null
  /** 0: no background refresh (tests call `refresh`). */
  syncIntervalMs?: number
  random?: () => number
}

export function rig({ file, clock, store = null, syncIntervalMs = 0, random = () => 0.5 }: RigOptions): Rig {
  const config = buildConfig({}, file)
  const router = new ModelRouter(config.models, createProviders(config.providers))
  const breakers = createBreakers({
    store,
    policy: config.breaker.policy,
    targets: config.breaker.targets,
    syncIntervalMs,
    random,
    ...(clock ? { now: clock.now, sleep: clock.sleep } : {}),
  })
  const resilience = new Resilience({
    router,
    breakers,
    models: config.breaker.models,
    priceOf: (model) => (model.pricing ? priceFromUsdPerMillion(model.pricing) : freePrice),
    staleCache: config.breaker.staleCache,
  })
  return { config, breakers, resilience, close: () => breakers.close() }
}

export function newExchange(): Exchange {
  return new Exchange(new SettlementHub(), {
    id: `test-${crypto.randomUUID()}`,
    method: 'POST',
    path: '/v1/chat/completions',
  })
}

export function chatRequest(model: string, extra: Partial<ChatRequest> = {}): ChatRequest {
  return { model, messages: [{ role: 'user', content: 'Say something resilient.' }], max_tokens: 8, ...extra }
}

/** The rejection of a promise that must reject. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error('expected a rejection')
}
