/**
 * What the request-rate benches share: the gateway's config (every plugin on, or one switched
 * off through real config), the request they send, and a `Stack` of simulator + throwaway
 * Postgres database + gateway + enterprise key, torn down in reverse.
 */
import type { TierLimits } from '../../plugins/quota'
import type { Target } from './load'
import {
  type Child,
  createDatabase,
  type Gateway,
  REDIS_URL,
  startGateway,
  startSim,
  type ThrowawayDatabase,
} from './procs'

/** The model clients name; it routes to the simulator process as an OpenAI-compatible upstream. */
export const MODEL = 'bench-1'

/**
 * Limits far above any rate a bench reaches, all set (none null): the quota scripts then do
 * all their work (every window, the token and cost budgets, concurrency leases) and never deny.
 */
export const highLimits = {
  requests_per_minute: 100_000_000,
  requests_per_hour: 1_000_000_000,
  requests_per_day: 1_000_000_000,
  tokens_per_day: 1_000_000_000_000,
  cost_per_day_usd: 1_000_000_000,
  concurrent: 1_000_000,
}

/** A tier with no limit at all (every field null): admission still runs, nothing is counted against a cap. */
export const noLimits: TierLimits = {
  requests_per_minute: null,
  requests_per_hour: null,
  requests_per_day: null,
  tokens_per_day: null,
  cost_per_day_usd: null,
  concurrent: null,
}

/** A plugin on the request path with an `enabled` setting of its own. */
export type Switch = 'quota' | 'cache' | 'ledger' | 'breaker'

/** How a variant differs from every-plugin-on; each switch is a real config setting. */
export interface Variant {
  name: string
  /** What was switched off and how. */
  description: string
  /** Plugins switched off with `<plugin>.enabled: false`. */
  off?: Switch[]
  /** Cache on and every prompt unique and cacheable: each request pays a lookup and a store. */
  cacheMiss?: boolean
}

export const allOn: Variant = {
  name: 'all plugins on',
  description: 'auth, quota (all limits set), cache (bypassed per request: no-store), ledger, breaker',
}

export function gatewayFile(simUrl: string, variant: Variant = allOn): Record<string, unknown> {
  const on = (plugin: Switch) => !variant.off?.includes(plugin)
  return {
    providers: { upstream: { type: 'openai', base_url: `${simUrl}/v1` } },
    models: {
      [MODEL]: { provider: 'upstream', upstream_model: 'sim-1', pricing: { input: 0.5, output: 1.5 } },
    },
    tiers: { enterprise: highLimits },
    global: { concurrent: 1_000_000, requests_per_hour: 1_000_000_000, cost_per_day_usd: 1_000_000_000 },
    quota: { enabled: on('quota') },
    ledger: { enabled: on('ledger') },
    breaker: { enabled: on('breaker') },
    // A short TTL, so the entries the cache-miss variant stores leave the shared Redis soon.
    cache: { enabled: on('cache'), responses: { ttl_seconds: 60 } },
  }
}

/** A small fixed answer: the simulator's default answer length capped at 8 tokens. */
export function chatBody(variant: Variant = allOn): (i: number) => string {
  const miss = variant.cacheMiss === true
  const salt = crypto.randomUUID().slice(0, 8)
  const fixed = JSON.stringify({
    model: MODEL,
    messages: [{ role: 'user', content: 'Say hello in eight words.' }],
    max_tokens: 8,
  })
  // temperature 0 makes a chat request cacheable; a unique prompt makes every lookup miss.
  return miss
    ? (i) =>
        JSON.stringify({
          model: MODEL,
          messages: [{ role: 'user', content: `Say hello in eight words. ${salt}-${i}` }],
          max_tokens: 8,
          temperature: 0,
        })
    : () => fixed
}

export function directTarget(sim: Child): Target {
  return {
    name: 'direct',
    url: `${sim.url}/v1/chat/completions`,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'sim-1',
      messages: [{ role: 'user', content: 'Say hello in eight words.' }],
      max_tokens: 8,
    }),
  }
}

export function gatewayTarget(
  gateway: Child,
  key: string,
  variant: Variant = allOn,
  name = 'tollgate',
): Target {
  return {
    name,
    url: `${gateway.url}/v1/chat/completions`,
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${key}`,
      // Every request goes upstream: the cache plugin runs, parses the directive and stays out.
      ...(variant.cacheMiss || variant.off?.includes('cache') ? {} : { 'cache-control': 'no-store' }),
    },
    body: chatBody(variant),
  }
}

export interface Stack {
  sim: Child
  database: ThrowawayDatabase
  gateway: Gateway
  key: string
  close(): Promise<void>
}

export interface StackOptions {
  variant?: Variant
  sim?: Child
  cpuProfileDir?: string
  env?: Record<string, string>
  /** Adds to the config file (more providers and models, say). */
  extend?: (file: Record<string, unknown>) => Record<string, unknown>
}

/** Simulator (unless given), throwaway database, gateway on real Redis and Postgres, and a key. */
export async function startStack({
  variant = allOn,
  sim,
  cpuProfileDir,
  env = {},
  extend = (file) => file,
}: StackOptions = {}): Promise<Stack> {
  const ownSim = !sim
  const upstream = sim ?? (await startSim())
  const database = await createDatabase()
  let gateway: Gateway
  try {
    gateway = await startGateway({
      file: extend(gatewayFile(upstream.url, variant)),
      env: { REDIS_URL, DATABASE_URL: database.url, ...env },
      cpuProfileDir,
    })
  } catch (error) {
    await database.drop()
    throw error
  }
  const key = await gateway.createKey(`bench-${Date.now().toString(36)}`, 'enterprise')
  return {
    sim: upstream,
    database,
    gateway,
    key,
    async close() {
      await gateway.stop()
      await database.drop()
      if (ownSim) await upstream.stop()
    },
  }
}
