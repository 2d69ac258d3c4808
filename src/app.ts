/**
 * createApp(runtime): composes the plugins and routes into one Elysia app. Tests build it
 * with their own runtime; src/main.ts builds it with the real one and listens.
 */
import { Elysia } from 'elysia'
import { auth, authAdmin } from '../plugins/auth'
import { exchange } from '../plugins/exchange'
import pkg from '../package.json'
import { log } from './log'
import type { Runtime } from './runtime'
import { docsRoutes } from './routes/docs'
import { type HealthCheck, healthRoutes, type Lifecycle } from './routes/health'
import { openAIRoutes } from './routes/openai'

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
        if (store.kind === 'memory') return { status: 'healthy', message: 'in-memory store (single instance)' }
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

export function createApp(runtime: Runtime, { lifecycle = { started: true, draining: false } }: AppOptions = {}) {
  const { config, settlements, router, database } = runtime
  const spine = exchange({
    hub: settlements,
    bodyLimitBytes: config.server.bodyLimitBytes,
    onUnexpectedError: (error) => log.error('unhandled error', { error: String(error), stack: (error as Error).stack }),
  })
  const keyAuth = auth({
    db: database.db,
    adminApiKey: config.adminApiKey,
    cacheTtlMs: config.auth.keyCacheTtlMs,
  })
  return new Elysia({ name: 'tollgate' })
    .use(spine)
    .use(docsRoutes({ version: pkg.version }))
    .use(healthRoutes({ checks: dependencyChecks(runtime), lifecycle }))
    .use(openAIRoutes({ router, spine, auth: keyAuth }))
    .group('/admin', (admin) =>
      admin.use(authAdmin({ db: database.db, adminApiKey: config.adminApiKey, tiers: Object.keys(config.tiers) })),
    )
}

export type App = ReturnType<typeof createApp>
