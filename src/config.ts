/**
 * Environment + optional config file (`TOLLGATE_CONFIG`, YAML or JSON) -> one validated,
 * typed Config. Env wins where both set a value. An invalid config throws a ConfigError
 * that names the field and the problem, and startup stops there.
 */
import { Value } from '@sinclair/typebox/value'
import type { BreakerPolicy, RetryPolicy, TimeoutLimits } from '../plugins/breaker'
import { ConfigError } from './config-error'
import {
  type ConfigFile,
  ConfigFileSchema,
  type GlobalLimits,
  type Pricing,
  type ProviderConfig,
  type TierLimits,
} from './config-schema'
import { resolveBreaker, resolveCache, resolveLedger, resolveObservability } from './config-sections'

export { ConfigError } from './config-error'
export type { GlobalLimits, Pricing, ProviderConfig, TierLimits } from './config-schema'
export { breakerTarget } from './config-sections'

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent'

export interface ModelConfig {
  name: string
  provider: string
  upstreamModel: string
  kind: 'chat' | 'embedding'
  /** USD per 1M tokens; null only when the model is explicitly marked free. */
  pricing: Pricing | null
  fallbacks: string[]
}

/** When, for how long and in which namespace a model's answers are cached. */
export interface CacheRuleConfig {
  mode: 'deterministic' | 'always' | 'never'
  ttlMs: number
  namespace: 'user' | 'shared'
}

/** Retries and time limits of one model's upstream calls. */
export interface ModelResilience {
  retry: RetryPolicy
  timeouts: TimeoutLimits
}

export interface Config {
  production: boolean
  logLevel: LogLevel
  server: {
    port: number
    host: string
    bodyLimitBytes: number
    shutdownGraceMs: number
    /** On SIGTERM, how long readiness fails while the listener still serves, before the drain. */
    drainDelayMs: number
  }
  redis: {
    url: string | null
    clusterNodes: string[]
    keyPrefix: string
    /** How long startup waits for a configured Redis before serving on the fallbacks. */
    startupWaitMs: number
  }
  database: { url: string | null; dataDir: string }
  adminApiKey: string | null
  auth: {
    keyCacheTtlMs: number
    /** Longest a request waits for a key lookup in the database. */
    lookupTimeoutMs: number
    /** While the database is unreachable, how long past expiry a cached lookup still answers; 0: never. */
    staleWhileUnavailableMs: number
    failuresPerMinute: number | null
    trustedProxyHops: number
  }
  /** Named as the exchange plugin's options, so they can be passed on as they are. */
  limits: { maxJsonDepth: number; maxJsonArrayLength: number; maxHeaderBytes: number }
  providers: Record<string, ProviderConfig & { apiKey?: string }>
  models: Record<string, ModelConfig>
  tiers: Record<string, TierLimits>
  global: GlobalLimits
  quota: {
    enabled: boolean
    fallback: 'local' | 'open' | 'closed'
    routeWeights: Record<string, number>
    defaultMaxTokens: number
    leaseTtlMs: number
    refundRequestsOnError: boolean
  }
  ledger: {
    enabled: boolean
    flushIntervalMs: number
    batchSize: number
    maxBacklog: number
    overflow: 'reject' | 'drop'
    retryInitialMs: number
    retryMaxMs: number
    shutdownTimeoutMs: number
    /** Where events unwritten at shutdown go; null: only logged. */
    spillDir: string | null
    budgetRefreshMs: number
  }
  cache: {
    enabled: boolean
    maxEntryBytes: number
    memoryMaxBytes: number
    staleMs: number
    coalesce: boolean
    responses: CacheRuleConfig
    embeddings: CacheRuleConfig
    /** Per-model overrides of the rule of the model's kind. */
    models: Record<string, Partial<CacheRuleConfig>>
  }
  breaker: {
    /** Off: no breaker opens; retries, timeouts and fallbacks still apply. */
    enabled: boolean
    /** The policy of a target no model names (config resolves one per target below). */
    policy: BreakerPolicy
    /** Per breaker target (`breakerTarget(model)`): defaults, then provider, then model overrides. */
    targets: Record<string, BreakerPolicy>
    /** Per model name, resolved the same way. */
    models: Record<string, ModelResilience>
    syncIntervalMs: number
    /** Whether a stale cache entry answers when no upstream can. */
    staleCache: boolean
  }
  /** Metrics, request logs and tracing (plugins/observability). */
  observability: {
    /** Bearer token `GET /metrics` requires; null leaves it open. */
    metricsToken: string | null
    processMetrics: boolean
    dependencyTimeoutMs: number
    logRequests: boolean
    logBodies: boolean
    quietPaths: string[]
    /** Set when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is: spans are exported over OTLP/HTTP. */
    otlp: { url: string; serviceName: string; sampleRatio: number } | null
    dailyCostAlertUsd: number | null
  }
  /** Active SSE streams (plugins/streams). */
  streams: { heartbeatMs: number }
  /** Where the file came from, for the startup log. */
  source: string | null
}

export const defaultTiers: Record<string, TierLimits> = {
  free: {
    requests_per_minute: 10,
    requests_per_hour: 100,
    requests_per_day: 500,
    tokens_per_day: 50_000,
    cost_per_day_usd: 5,
    concurrent: 2,
    max_messages: 100,
    max_prompt_chars: 100_000,
  },
  basic: {
    requests_per_minute: 30,
    requests_per_hour: 500,
    requests_per_day: 5_000,
    tokens_per_day: 500_000,
    cost_per_day_usd: 50,
    concurrent: 5,
    max_messages: 200,
    max_prompt_chars: 250_000,
  },
  pro: {
    requests_per_minute: 100,
    requests_per_hour: 2_000,
    requests_per_day: 20_000,
    tokens_per_day: 2_000_000,
    cost_per_day_usd: 200,
    concurrent: 20,
    max_messages: 500,
    max_prompt_chars: 1_000_000,
  },
  enterprise: {
    requests_per_minute: 1_000,
    requests_per_hour: 10_000,
    requests_per_day: 100_000,
    tokens_per_day: 10_000_000,
    cost_per_day_usd: 2_000,
    concurrent: 100,
    max_messages: null,
    max_prompt_chars: null,
  },
}

const defaultGlobal: GlobalLimits = { concurrent: 100, requests_per_hour: null, cost_per_day_usd: null }
const logLevels: LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent']

/** Built-in models: the simulator is always there, so the embedded default answers at once. */
const simulatorModels: ConfigFile['models'] = {
  'sim-1': { provider: 'sim', pricing: { input: 0.5, output: 1.5, cached_input: 0.25 } },
  'sim-embed-1': { provider: 'sim', kind: 'embedding', pricing: { input: 0.02, output: 0 } },
}
const openAIModels: ConfigFile['models'] = {
  'gpt-4o-mini': { provider: 'openai', pricing: { input: 0.15, output: 0.6, cached_input: 0.075 } },
  'text-embedding-3-small': { provider: 'openai', kind: 'embedding', pricing: { input: 0.02, output: 0 } },
}

export type Env = Record<string, string | undefined>

export async function readConfigFile(path: string): Promise<unknown> {
  const file = Bun.file(path)
  if (!(await file.exists())) throw new ConfigError(`TOLLGATE_CONFIG: file not found: ${path}`)
  const text = await file.text()
  try {
    return /\.json$/i.test(path) ? JSON.parse(text) : (Bun.YAML.parse(text) ?? {})
  } catch (error) {
    throw new ConfigError(`TOLLGATE_CONFIG: cannot parse ${path}: ${(error as Error).message}`)
  }
}

function checkFile(raw: unknown): ConfigFile {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new ConfigError('config: the file must hold a mapping of sections')
  const first = Value.Errors(ConfigFileSchema, raw).First()
  if (first) {
    const field = first.path.replace(/^\//, '').replaceAll('/', '.') || '(root)'
    const problem =
      first.message === 'Unexpected property' ? 'is not a known setting' : first.message.toLowerCase()
    throw new ConfigError(`config: ${field}: ${problem}`)
  }
  return raw as ConfigFile
}

function envInteger(env: Env, name: string, min: number, max: number): number | undefined {
  const raw = env[name]
  if (raw === undefined || raw === '') return undefined
  const value = Number(raw)
  if (!Number.isInteger(value) || value < min || value > max)
    throw new ConfigError(`${name}: must be an integer from ${min} to ${max}, got "${raw}"`)
  return value
}

function resolveModels(file: ConfigFile, providers: Config['providers']): Record<string, ModelConfig> {
  const declared = {
    ...simulatorModels,
    ...(providers.openai && !file.models ? openAIModels : {}),
    ...file.models,
  }
  const models: Record<string, ModelConfig> = {}
  for (const [name, model] of Object.entries(declared)) {
    if (!providers[model.provider])
      throw new ConfigError(`config: models.${name}.provider: no provider named "${model.provider}"`)
    if (!model.pricing && !model.free)
      throw new ConfigError(`config: models.${name}.pricing: required (or mark the model free: true)`)
    models[name] = {
      name,
      provider: model.provider,
      upstreamModel: model.upstream_model ?? name,
      kind: model.kind ?? (/embed/i.test(name) ? 'embedding' : 'chat'),
      pricing: model.pricing ?? null,
      fallbacks: model.fallbacks ?? [],
    }
  }
  for (const model of Object.values(models)) {
    for (const fallback of model.fallbacks) {
      if (!models[fallback])
        throw new ConfigError(`config: models.${model.name}.fallbacks: no model named "${fallback}"`)
    }
  }
  return models
}

function resolveProviders(file: ConfigFile, env: Env): Config['providers'] {
  const providers: Config['providers'] = { sim: { type: 'simulator' }, ...file.providers }
  if (env.OPENAI_API_KEY || env.OPENAI_BASE_URL) {
    const declared = providers.openai
    if (declared && declared.type !== 'openai')
      throw new ConfigError(
        'config: providers.openai: OPENAI_* env is set but this provider is not type openai',
      )
    providers.openai = {
      type: 'openai',
      ...(declared?.type === 'openai' ? declared : {}),
      base_url:
        env.OPENAI_BASE_URL ??
        (declared?.type === 'openai' ? declared.base_url : 'https://api.openai.com/v1'),
    }
  }
  for (const [name, provider] of Object.entries(providers)) {
    if (provider.type !== 'openai') continue
    const keyEnv = provider.api_key_env ?? (name === 'openai' ? 'OPENAI_API_KEY' : undefined)
    const apiKey = keyEnv ? env[keyEnv] : undefined
    providers[name] = { ...provider, ...(apiKey ? { apiKey } : {}) }
  }
  return providers
}

/** Builds the Config from an environment and an already-parsed config file. */
export function buildConfig(env: Env, rawFile: unknown = {}, source: string | null = null): Config {
  const file = checkFile(rawFile)
  const production = env.NODE_ENV === 'production'
  const logLevel = (env.LOG_LEVEL ?? 'info').toLowerCase() as LogLevel
  if (!logLevels.includes(logLevel))
    throw new ConfigError(`LOG_LEVEL: must be one of ${logLevels.join(', ')}, got "${env.LOG_LEVEL}"`)
  const adminApiKey = env.ADMIN_API_KEY || null
  if (production && !adminApiKey) throw new ConfigError('ADMIN_API_KEY: required when NODE_ENV=production')
  if (adminApiKey && adminApiKey.length < 16)
    throw new ConfigError('ADMIN_API_KEY: must be at least 16 characters')
  // User keys are `tg-...`: an admin key of that shape could be taken for one, or one for it.
  if (adminApiKey?.startsWith('tg-'))
    throw new ConfigError('ADMIN_API_KEY: must not start with "tg-", the prefix of user API keys')
  const providers = resolveProviders(file, env)
  const models = resolveModels(file, providers)
  const dataDir = env.DATA_DIR || './.data'
  const tiers: Record<string, TierLimits> = { ...defaultTiers }
  for (const [name, limits] of Object.entries(file.tiers ?? {})) {
    tiers[name] = { ...(defaultTiers[name] ?? defaultTiers.free!), ...limits }
  }
  return {
    production,
    logLevel,
    server: {
      port: envInteger(env, 'PORT', 0, 65535) ?? file.server?.port ?? 8080,
      host: env.HOST ?? file.server?.host ?? '0.0.0.0',
      bodyLimitBytes: file.server?.body_limit_bytes ?? 1_048_576,
      shutdownGraceMs: file.server?.shutdown_grace_ms ?? 10_000,
      drainDelayMs: file.server?.drain_delay_ms ?? 0,
    },
    redis: {
      url: env.REDIS_URL || null,
      clusterNodes: (env.REDIS_CLUSTER_NODES ?? '')
        .split(',')
        .map((node) => node.trim())
        .filter(Boolean),
      keyPrefix: env.REDIS_KEY_PREFIX || 'tg:',
      startupWaitMs: file.redis?.startup_wait_ms ?? 30_000,
    },
    database: { url: env.DATABASE_URL || null, dataDir },
    adminApiKey,
    auth: {
      keyCacheTtlMs: file.auth?.key_cache_ttl_ms ?? 5_000,
      lookupTimeoutMs: file.auth?.lookup_timeout_ms ?? 1_000,
      staleWhileUnavailableMs: file.auth?.stale_while_unavailable_ms ?? 300_000,
      failuresPerMinute: file.auth?.failures_per_minute === undefined ? 20 : file.auth.failures_per_minute,
      trustedProxyHops: file.auth?.trusted_proxy_hops ?? 0,
    },
    limits: {
      maxJsonDepth: file.limits?.max_json_depth ?? 64,
      maxJsonArrayLength: file.limits?.max_json_array_length ?? 10_000,
      maxHeaderBytes: file.limits?.max_header_bytes ?? 8192,
    },
    providers,
    models,
    tiers,
    global: { ...defaultGlobal, ...file.global },
    quota: {
      enabled: file.quota?.enabled ?? true,
      fallback: file.quota?.fallback ?? 'local',
      routeWeights: file.quota?.route_weights ?? {},
      defaultMaxTokens: file.quota?.default_max_tokens ?? 1024,
      leaseTtlMs: file.quota?.lease_ttl_ms ?? 600_000,
      refundRequestsOnError: file.quota?.refund_requests_on_error ?? false,
    },
    ledger: resolveLedger(file, dataDir),
    cache: resolveCache(file, models),
    breaker: resolveBreaker(file, providers, models),
    observability: resolveObservability(file, env),
    streams: { heartbeatMs: file.streams?.heartbeat_ms ?? 15_000 },
    source,
  }
}

/** Reads `TOLLGATE_CONFIG` (if set) and the environment. */
export async function loadConfig(env: Env = process.env): Promise<Config> {
  const path = env.TOLLGATE_CONFIG || undefined
  return buildConfig(env, path ? await readConfigFile(path) : {}, path ?? null)
}
