/**
 * The store reads of one lookup, all issued synchronously in the caller's tick: the global
 * epoch, the namespace version and the entries. node-redis writes commands queued in one
 * tick as one batch (on a cluster, one per node, in parallel), so a lookup costs one round
 * trip and shares it with the quota reservation issued next to it. No MGET: entry keys
 * spread over cluster slots, and GETs need no shared slot.
 */
import type { Store } from '../store'
import type { Versions } from './entry'
import { epochKey, versionKey } from './key'

const decoder = new TextDecoder()

/** A counter as stored (decimal digits); absent is 0. Garbage reads NaN, which matches no entry. */
export function counterValue(bytes: Uint8Array | null): number {
  return bytes === null ? 0 : Number(decoder.decode(bytes))
}

export async function readGeneration(
  store: Store,
  namespace: string,
  keys: readonly string[],
): Promise<{ versions: Versions; entries: Array<Uint8Array | null> }> {
  const [epoch, version, ...entries] = await Promise.all([
    store.get(epochKey),
    store.get(versionKey(namespace)),
    ...keys.map((key) => store.get(key)),
  ])
  return {
    versions: { epoch: counterValue(epoch ?? null), namespace: counterValue(version ?? null) },
    entries,
  }
}
