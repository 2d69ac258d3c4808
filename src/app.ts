/**
 * createApp(runtime): composes the plugins and routes into one Elysia app. Tests build it
 * with their own runtime; src/main.ts builds it with the real one and listens.
 */
import { Elysia } from 'elysia'
import pkg from '../package.json'
import { ApiKeys, AuthFailures, auth, authAdmin } from '../plugins/auth'
import { breaker, breakerAdmin, breakerHealthCheck } from '../plugins/breaker'
import { cache, cacheAdmin } from '../plugins/cache'
import { cost, costAdmin } from '../plugins/cost'
import { exchange, freePrice, priceFromUsdPerMillion } from '../plugins/exchange'
import { observability } from '../plugins/observability'
import { quota } from '../plugins/quota'
import { streams, streamsAdmin } from '../plugins/streams'
import type { ModelConfig } from './config'
import { log } from './log'
import { docsRoutes } from './routes/docs'
import { type HealthCheck, healthRoutes, type Lifecycle } from './routes/health'
import { openAIRoutes } from './routes/openai'
import { usageRoutes } from './routes/usage-routes'
import type { Runtime } from './runtime'
import { Resilience } from './upstream/resilient'

export interface AppOptions {
  /** Startup and drain state, shared with src/main.ts; tests get a started app by default. */
  lifecycle?: Lifecycle
}

function dependencyChecks(runtime: Runtime): HealthCheck[] {
  const { store, database } = runtime
  return [
    {
      name: store.kind === 'redis' ? 'redis' : 'store',
      failureStatus: 'degraded',
      async check() {
        if (store.kind === 'memory')
          return { status: 'healthy', message: 'in-memory store (single instance)' }
        await store.ping()
        return { status: 'healthy', message: 'connected' }
      },
    },
    {
      name: database.kind === 'postgres' ? 'postgres' : 'pglite',
      failureStatus: 'degraded',
      async check() {
        await database.ping()
        return { status: 'healthy', message: database.kind === 'postgres' ? 'connected' : 'embedded' }
      },
    },
  ]
}

export function createApp(
  runtime: Runtime,
  { lifecycle = { started: true, draining: false } }: AppOptions = {},
) {
  const { config, settlements, router, database } = runtime
  const prices = new Map(
    router
      .list()
      .map((model) => [model.name, model.pricing ? priceFromUsdPerMillion(model.pricing) : freePrice]),
  )
  const priceOf = (model: ModelConfig) => prices.get(model.name) ?? freePrice
  const now = runtime.clock ?? Date.now
  const spine = exchange({
    hub: settlements,
    bodyLimitBytes: config.server.bodyLimitBytes,
    ...config.limits,
    promptLimits: config.tiers,
    onUnexpectedError: (error) =>
      log.error('unhandled error', { error: String(error), stack: (error as Error).stack }),
  })
  // Before the other plugins, so they can report through `metrics`; used right after the spine.
  const { logRequests, ...observing } = config.observability
  const telemetry = observability({
    ...observing,
    hub: settlements,
    version: pkg.version,
    log: logRequests ? log : null,
    models: Object.keys(config.models),
    tiers: Object.keys(config.tiers),
    dependencies: [
      { name: 'database', ping: () => database.ping() },
      ...(runtime.store.kind === 'redis' ? [{ name: 'redis', ping: () => runtime.store.ping() }] : []),
    ],
    onError: (error) => log.error('observability error', { error: String(error) }),
  })
  const metrics = telemetry.decorator.metrics
  const keys = new ApiKeys({
    db: database.db,
    cacheTtlMs: config.auth.keyCacheTtlMs,
    lookupTimeoutMs: config.auth.lookupTimeoutMs,
    staleWhileUnavailableMs: config.auth.staleWhileUnavailableMs,
    onLookupError: (error) => log.error('key lookup failed', { error: String(error) }),
  })
  // One instance for /v1 and /admin, so an address's failures count together.
  const authFailures = new AuthFailures({
    perMinute: config.auth.failuresPerMinute,
    trustedProxyHops: config.auth.trustedProxyHops,
    onAuthFailure: metrics.authFailure,
  })
  const keyAuth = auth({ keys, adminApiKey: config.adminApiKey, failures: authFailures })
  const quotas = quota({
    enabled: config.quota.enabled,
    store: runtime.store,
    hub: settlements,
    tiers: config.tiers,
    global: config.global,
    fallback: config.quota.fallback,
    routeWeights: config.quota.routeWeights,
    defaultMaxTokens: config.quota.defaultMaxTokens,
    leaseTtlMs: config.quota.leaseTtlMs,
    refundRequestsOnError: config.quota.refundRequestsOnError,
    now: runtime.clock,
    onDecision: metrics.quotaDecision,
    onFallback: (active) => {
      metrics.quotaFallback(active)
      log.warn(active ? 'quota fallback engaged' : 'quota enforcement back on the store')
    },
  })
  const admission = quotas.decorator.quota
  const caching = cache({
    store: runtime.store,
    hub: settlements,
    ...config.cache,
    now,
    onError: (error) => log.error('cache error', { error: String(error) }),
  })
  const answers = caching.decorator.cache
  const costs = cost({
    db: database.db,
    hub: settlements,
    ...config.ledger,
    log,
    now,
    onFlush: metrics.ledgerFlush,
  })
  const ledger = costs.decorator.ledger
  const breakers = breaker({
    enabled: config.breaker.enabled,
    store: runtime.store,
    policy: config.breaker.policy,
    targets: config.breaker.targets,
    syncIntervalMs: config.breaker.syncIntervalMs,
    now,
    onEvent: (event) => {
      metrics.breakerEvent(event)
      if (event.type === 'transition') log.warn('breaker transition', { ...event })
    },
  })
  const circuits = breakers.decorator.breakers
  const resilience = new Resilience({
    router,
    breakers: circuits,
    models: config.breaker.models,
    priceOf,
    staleCache: config.breaker.staleCache,
  })
  const streaming = streams({ heartbeatMs: config.streams.heartbeatMs, now })
  const activeStreams = streaming.decorator.streams
  // Plugins that keep running totals are read at each scrape.
  metrics.readCache(() => answers.stats())
  metrics.readLedger(() => ledger.stats())
  metrics.readBreakers(() => circuits.list())
  return new Elysia({ name: 'tollgate' })
    .use(spine)
    .use(telemetry)
    .use(quotas)
    .use(caching)
    .use(costs)
    .use(breakers)
    .use(streaming)
    .use(docsRoutes({ version: pkg.version }))
    .use(
      healthRoutes({
        checks: [...dependencyChecks(runtime), ledger.healthCheck(), breakerHealthCheck(circuits)],
        lifecycle,
      }),
    )
    .use(
      openAIRoutes({
        router,
        spine,
        auth: keyAuth,
        admission,
        cache: answers,
        resilience,
        priceOf,
        streams: activeStreams,
      }),
    )
    .use(usageRoutes({ spine, auth: keyAuth, keys, admission, ledger }))
    .group('/admin', (admin) =>
      admin
        .use(
          authAdmin({
            keys,
            adminApiKey: config.adminApiKey,
            tiers: Object.keys(config.tiers),
            failures: authFailures,
          }),
        )
        .guard({ admin: true }, (guarded) =>
          guarded
            .use(costAdmin({ ledger, now }))
            .use(cacheAdmin(answers))
            .use(breakerAdmin(circuits))
            .use(streamsAdmin(activeStreams)),
        ),
    )
}

export type App = ReturnType<typeof createApp>
