/**
 * Stream control; the plugin's only door. Decorates `streams`, the instance's registry of
 * active SSE streams: the chat route registers each relayed stream and reports its
 * progress, and `streamsAdmin` (mounted by the application under `/admin`) lists and
 * cancels them. The plugin holds the heartbeat interval too, so the relay and the config
 * agree on one value.
 */
import { Elysia } from 'elysia'
import { StreamRegistry } from './registry'

export { streamsAdmin } from './admin'
export type { StreamEntry } from './registry'
export { StreamRegistry } from './registry'

export interface StreamsOptions {
  /**
   * Silence from the upstream, in ms, after which the relay sends an SSE comment (`: ping`),
   * and again after each further such interval, so proxies do not cut idle streams.
   * @default 15000
   */
  heartbeatMs?: number
  /**
   * Clock in epoch ms, for `started_at`; tests inject one.
   * @default Date.now
   */
  now?: () => number
}

/** The plugin: decorates `streams` (the registry). */
export function streams({ heartbeatMs = 15_000, now = Date.now }: StreamsOptions = {}) {
  const registry = new StreamRegistry(heartbeatMs, now)
  return new Elysia({ name: 'tollgate/streams', seed: { heartbeatMs } }).decorate('streams', registry)
}
