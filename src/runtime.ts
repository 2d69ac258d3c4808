/**
 * Builds the live dependencies from a Config once, at startup: the shared-state store
 * (Redis or memory), the database (Postgres or PGlite, migrated), the providers and the
 * model router, and the settlement hub every plugin subscribes to. Tests build their own.
 */
import { type Database, openDatabase } from '../db/client'
import { SettlementHub } from '../plugins/exchange'
import { createStore, type Store } from '../plugins/store'
import type { Config } from './config'
import { log } from './log'
import type { Provider } from './upstream/provider'
import { createProviders, ModelRouter } from './upstream/router'

export interface Runtime {
  config: Config
  store: Store
  database: Database
  providers: Record<string, Provider>
  router: ModelRouter
  settlements: SettlementHub
  /** Epoch-ms clock for limits; null uses the Redis server's clock. Tests inject one. */
  clock: (() => number) | null
  close(): Promise<void>
}

export interface RuntimeOverrides {
  store?: Store
  database?: Database
  providers?: Record<string, Provider>
  clock?: () => number
}

/**
 * The shared-state store the config names. Redis starts connecting at once, in the
 * background; src/main.ts creates it before waiting on the database, so both come up together.
 */
export function createConfiguredStore(config: Config): Store {
  return createStore({
    url: config.redis.url ?? undefined,
    clusterNodes: config.redis.clusterNodes,
    keyPrefix: config.redis.keyPrefix,
    onStateChange: (available, error) =>
      available ? log.info('redis available') : log.warn('redis unavailable', { error: String(error ?? '') }),
  })
}

export async function createRuntime(config: Config, overrides: RuntimeOverrides = {}): Promise<Runtime> {
  const store = overrides.store ?? createConfiguredStore(config)
  const database = overrides.database ?? (await openDatabase(config.database))
  const providers = overrides.providers ?? createProviders(config.providers)
  const router = new ModelRouter(config.models, providers)
  const settlements = new SettlementHub((phase, error) =>
    log.error('settlement listener failed', { phase, error: String(error) }),
  )
  return {
    config,
    store,
    database,
    providers,
    router,
    settlements,
    clock: overrides.clock ?? null,
    async close() {
      await Promise.allSettled([store.close(), database.close()])
    },
  }
}
