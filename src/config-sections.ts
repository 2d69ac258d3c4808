/**
 * The config sections that belong to plugins (ledger, cache, breaker, observability): each
 * resolves its file section and environment into the typed options src/app.ts hands over.
 * Kept apart from src/config.ts, which owns the core settings and the validation.
 */
import {
  type BreakerPolicy,
  defaultBreakerPolicy,
  defaultRetryPolicy,
  defaultTimeouts,
} from '../plugins/breaker'
import { defaultQuietPaths } from '../plugins/observability'
import type { CacheRuleConfig, Config, Env, ModelConfig, ModelResilience } from './config'
import { ConfigError } from './config-error'
import type { CacheRuleFile, ConfigFile, ResilienceFile } from './config-schema'

export function resolveLedger(file: ConfigFile, dataDir: string): Config['ledger'] {
  const ledger = file.ledger ?? {}
  return {
    enabled: ledger.enabled ?? true,
    flushIntervalMs: ledger.flush_interval_ms ?? 250,
    batchSize: ledger.batch_size ?? 1000,
    maxBacklog: ledger.max_backlog ?? 100_000,
    overflow: ledger.overflow ?? 'reject',
    retryInitialMs: ledger.retry_initial_ms ?? 100,
    retryMaxMs: ledger.retry_max_ms ?? 5_000,
    shutdownTimeoutMs: ledger.shutdown_timeout_ms ?? 10_000,
    spillDir: ledger.spill_dir === undefined ? `${dataDir}/ledger-spill` : ledger.spill_dir,
    budgetRefreshMs: ledger.budget_refresh_ms ?? 5_000,
  }
}

function cacheRule(rule: CacheRuleFile | undefined, defaults: CacheRuleConfig): CacheRuleConfig {
  return {
    mode: rule?.mode ?? defaults.mode,
    ttlMs: rule?.ttl_seconds === undefined ? defaults.ttlMs : rule.ttl_seconds * 1000,
    namespace: rule?.namespace ?? defaults.namespace,
  }
}

export function resolveCache(file: ConfigFile, models: Record<string, ModelConfig>): Config['cache'] {
  const cache = file.cache ?? {}
  const overrides: Config['cache']['models'] = {}
  for (const [name, rule] of Object.entries(cache.models ?? {})) {
    if (!models[name]) throw new ConfigError(`config: cache.models.${name}: no model named "${name}"`)
    overrides[name] = {
      ...(rule.mode ? { mode: rule.mode } : {}),
      ...(rule.ttl_seconds ? { ttlMs: rule.ttl_seconds * 1000 } : {}),
      ...(rule.namespace ? { namespace: rule.namespace } : {}),
    }
  }
  return {
    enabled: cache.enabled ?? true,
    maxEntryBytes: cache.max_entry_bytes ?? 1_048_576,
    memoryMaxBytes: cache.memory_max_bytes ?? 268_435_456,
    staleMs: (cache.stale_seconds ?? 3600) * 1000,
    coalesce: cache.coalesce ?? true,
    responses: cacheRule(cache.responses, { mode: 'deterministic', ttlMs: 3_600_000, namespace: 'user' }),
    embeddings: cacheRule(cache.embeddings, { mode: 'always', ttlMs: 604_800_000, namespace: 'user' }),
    models: overrides,
  }
}

/** The breaker a model's calls go through: one per provider and upstream model. */
export function breakerTarget(model: Pick<ModelConfig, 'provider' | 'upstreamModel'>): string {
  return `${model.provider}:${model.upstreamModel}`
}

/** Applies one level of breaker settings (file keys) over resolved ones. */
function overlay(base: BreakerPolicy & ModelResilience, level: ResilienceFile | undefined) {
  if (!level) return base
  const defined = <V extends object>(value: V) =>
    Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<V>
  const { timeouts: t = {}, retries: r = {} } = level
  return {
    ...base,
    ...defined({
      windowMs: level.window_ms,
      failureThreshold: level.failure_threshold,
      failureRateThreshold: level.failure_rate,
      minimumCalls: level.minimum_calls,
      cooldownMs: level.cooldown_ms,
      maxCooldownMs: level.max_cooldown_ms,
      halfOpenMaxProbes: level.half_open_probes,
      successThreshold: level.success_threshold,
    }),
    timeouts: {
      ...base.timeouts,
      ...defined({ connectMs: t.connect_ms, ttftMs: t.ttft_ms, idleMs: t.idle_ms, totalMs: t.total_ms }),
    },
    retry: {
      ...base.retry,
      ...defined({
        maxRetries: r.max_retries,
        backoffBaseMs: r.backoff_base_ms,
        backoffCapMs: r.backoff_cap_ms,
        retryAfterCapMs: r.retry_after_cap_ms,
      }),
    },
  }
}

export function resolveBreaker(
  file: ConfigFile,
  providers: Config['providers'],
  models: Record<string, ModelConfig>,
): Config['breaker'] {
  const section = file.breaker ?? {}
  for (const [scope, names, known] of [
    ['providers', section.providers, providers],
    ['models', section.models, models],
  ] as const) {
    for (const name of Object.keys(names ?? {}))
      if (!(name in known))
        throw new ConfigError(`config: breaker.${scope}.${name}: no ${scope.slice(0, -1)} named "${name}"`)
  }
  const base = overlay(
    { ...defaultBreakerPolicy, timeouts: defaultTimeouts, retry: defaultRetryPolicy },
    section,
  )
  const { timeouts: _timeouts, retry: _retry, ...policy } = base
  const breaker: Config['breaker'] = {
    enabled: section.enabled ?? true,
    policy,
    targets: {},
    models: {},
    syncIntervalMs: section.sync_interval_ms ?? 500,
    staleCache: section.stale_cache ?? true,
  }
  for (const model of Object.values(models)) {
    const { timeouts, retry, ...policy } = overlay(
      overlay(base, section.providers?.[model.provider]),
      section.models?.[model.name],
    )
    if (policy.cooldownMs > policy.maxCooldownMs)
      throw new ConfigError(`config: breaker: cooldown_ms of ${model.name} exceeds its max_cooldown_ms`)
    breaker.targets[breakerTarget(model)] = policy
    breaker.models[model.name] = { timeouts, retry }
  }
  return breaker
}

/** OTLP's own variables: a traces endpoint as it is, or the base endpoint plus `/v1/traces`. */
function otlpTracesUrl(env: Env): string | null {
  if (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  if (!env.OTEL_EXPORTER_OTLP_ENDPOINT) return null
  return `${env.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces`
}

export function resolveObservability(file: ConfigFile, env: Env): Config['observability'] {
  const { metrics = {}, logs = {}, tracing = {}, alerts = {} } = file.observability ?? {}
  const tokenEnv = metrics.bearer_token_env ?? null
  const metricsToken = tokenEnv ? env[tokenEnv] || null : null
  if (tokenEnv && !metricsToken)
    throw new ConfigError(`observability.metrics.bearer_token_env: ${tokenEnv} is not set in the environment`)
  const url = otlpTracesUrl(env)
  return {
    metricsToken,
    processMetrics: metrics.process_metrics ?? true,
    dependencyTimeoutMs: metrics.dependency_timeout_ms ?? 1000,
    logRequests: logs.requests ?? true,
    logBodies: logs.request_bodies ?? false,
    quietPaths: logs.quiet_paths ?? defaultQuietPaths,
    otlp: url
      ? {
          url,
          serviceName: env.OTEL_SERVICE_NAME || tracing.service_name || 'tollgate',
          sampleRatio: tracing.sample_ratio ?? 1,
        }
      : null,
    dailyCostAlertUsd: alerts.daily_cost_usd ?? null,
  }
}
