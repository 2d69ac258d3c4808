/**
 * The store plugin's only door. Everything above the seam (quota, cache, breaker, health)
 * imports from here and sees the Store interface; which backend runs is decided once, by
 * createStore, from the options config hands it.
 */
import { MemoryStore, type MemoryStoreOptions } from './memory'
import { RedisStore, type RedisStoreOptions } from './redis'

export { MemoryStore, type MemoryStoreOptions } from './memory'
export type { MemoryData } from './memory-data'
export { RedisStore, type RedisStoreOptions } from './redis'
export {
  defineStoreScript,
  type ScriptArg,
  type ScriptReply,
  type Store,
  type StoreScript,
  type StoreScriptInit,
  StoreUnavailableError,
} from './store'

export interface CreateStoreOptions extends RedisStoreOptions {
  /**
   * Options of the in-memory store, used when neither `url` nor `clusterNodes` is given.
   * @default {}
   */
  memory?: MemoryStoreOptions
}

/**
 * Redis (a cluster when `clusterNodes` is non-empty, else the server at `url`), or the
 * in-memory store when neither is set. Returns at once: Redis connects in the background
 * (`RedisStore.waitUntilAvailable` to wait), so a gateway starts even while Redis is down.
 */
export function createStore(options: CreateStoreOptions = {}): RedisStore | MemoryStore {
  const { memory, ...redis } = options
  if (redis.url || (redis.clusterNodes && redis.clusterNodes.length > 0)) return new RedisStore(redis)
  return new MemoryStore(memory)
}
