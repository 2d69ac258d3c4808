/**
 * The breaker scripts (record.lua, acquire.lua, read.lua beside this file) and their
 * in-memory twins. The twins follow the Lua line for line: they run every transition on
 * each instance's own copy first, so a decision never waits for Redis, and they are the
 * whole breaker when there is no Redis.
 */
import { defineStoreScript, type MemoryData } from '../store'

/** A target's hash as stored: numbers in memory, strings when they come back from Redis. */
export type Fields = Record<string, string | number>

/** `[head, field, value, field, value, ...]`: what the scripts answer. */
export type ScriptFields = Array<string | number>

/** s: success, f: failure, r: a probe's release (no verdict), n: none (batched successes only). */
export type Outcome = 's' | 'f' | 'r' | 'n'

/** A numeric field of a target's hash; 0 when it is missing. */
export const num = (fields: Fields, field: string): number => Number(fields[field] ?? 0) || 0

/** Calls and failures of the ring's buckets that are still inside the window ending in `current`. */
export function windowTotals(
  fields: Fields,
  current: number,
  buckets: number,
): { calls: number; failures: number } {
  let calls = 0
  let failures = 0
  for (let i = 0; i < buckets; i++) {
    if (num(fields, `t${i}`) > current - buckets) {
      calls += num(fields, `c${i}`)
      failures += num(fields, `f${i}`)
    }
  }
  return { calls, failures }
}

function flatten(head: string | number, fields: Fields): ScriptFields {
  const flat: ScriptFields = [head]
  // for-in, not Object.entries: the record twin runs on every upstream call, and entries()
  // allocates a pair per field of a ~35-field hash (about 5x slower in Bun).
  for (const field in fields) flat.push(field, fields[field]!)
  return flat
}

/** Fields from a script's answer (after its head) or from HGETALL. */
export function fieldsOf(reply: ScriptFields, from = 1): Fields {
  const fields: Fields = {}
  for (let i = from; i + 1 < reply.length; i += 2) fields[String(reply[i])] = reply[i + 1]!
  return fields
}

function hashOf(data: MemoryData, key: string): Fields {
  return { ...(data.get<Fields>(key) ?? {}) }
}

function open(fields: Fields, now: number, cooldown: number): void {
  Object.assign(fields, {
    state: 1,
    cooldown,
    opened_at: now,
    open_until: now + cooldown,
    probes: 0,
    successes: 0,
  })
}

export const recordScript = defineStoreScript<ScriptFields>({
  name: 'tollgate_breaker_record',
  lua: await Bun.file(new URL('./record.lua', import.meta.url)).text(),
  numberOfKeys: 1,
  runInMemory(data, [key], args) {
    const [now, , , , window, buckets, failureThreshold, failureRate, minimumCalls] = args.map(Number) as [
      number,
      number,
      number,
      number,
      number,
      number,
      number,
      number,
      number,
    ]
    const [cooldownBase, cooldownMax, successThreshold, ttl, batched, batchedAt] = args
      .slice(9)
      .map(Number) as [number, number, number, number, number, number]
    const outcome = args[1] as Outcome
    const probe = args[2] === '1'
    let h = hashOf(data, key!)
    const state = num(h, 'state')
    let transition = ''
    const bucketMs = window / buckets
    const current = Math.floor(now / bucketMs)

    const count = (bucket: number, calls: number) => {
      if (bucket <= current - buckets) return
      const slot = bucket % buckets
      if (num(h, `t${slot}`) !== bucket)
        Object.assign(h, { [`t${slot}`]: bucket, [`c${slot}`]: 0, [`f${slot}`]: 0 })
      h[`c${slot}`] = num(h, `c${slot}`) + calls
    }

    if (batched > 0) count(Math.min(current, Math.floor(batchedAt / bucketMs)), batched)
    if (outcome === 's' || outcome === 'f') {
      count(current, 1)
      if (outcome === 'f') {
        const slot = current % buckets
        h[`f${slot}`] = num(h, `f${slot}`) + 1
        h.failure_at = now
        h.failure = args[3]!
      }
    }

    if (state === 0 && outcome === 'f') {
      const { calls, failures } = windowTotals(h, current, buckets)
      if (
        (failureThreshold > 0 && failures >= failureThreshold) ||
        (failureRate > 0 && calls >= minimumCalls && failures >= failureRate * calls)
      ) {
        open(h, now, cooldownBase)
        transition = 'open'
      }
    } else if (state === 2 && probe) {
      h.probes = Math.max(0, num(h, 'probes') - 1)
      if (outcome === 'f') {
        open(h, now, Math.min(Math.max(num(h, 'cooldown'), cooldownBase) * 2, cooldownMax))
        transition = 'open'
      } else if (outcome === 's') {
        h.successes = num(h, 'successes') + 1
        if (h.successes >= successThreshold) {
          const kept: Fields = { state: 0 }
          if (h.failure_at !== undefined) kept.failure_at = h.failure_at
          if (h.failure !== undefined) kept.failure = h.failure
          h = kept
          transition = 'closed'
        }
      }
    }
    data.set(key!, h, ttl)
    return flatten(transition, h)
  },
})

export const acquireScript = defineStoreScript<ScriptFields>({
  name: 'tollgate_breaker_acquire',
  lua: await Bun.file(new URL('./acquire.lua', import.meta.url)).text(),
  numberOfKeys: 1,
  runInMemory(data, [key], args) {
    const [now, lease, maxProbes, ttl] = args.map(Number) as [number, number, number, number]
    const h = hashOf(data, key!)
    let state = num(h, 'state')
    if (state === 0) return flatten(2, h)
    let verdict = 0
    if (state === 1 && now >= num(h, 'open_until')) {
      state = 2
      Object.assign(h, { state: 2, probes: 0, successes: 0 })
    }
    if (state === 2) {
      if (num(h, 'probes') > 0 && now >= num(h, 'probe_until')) h.probes = 0
      if (num(h, 'probes') < maxProbes) {
        h.probes = num(h, 'probes') + 1
        h.probe_until = Math.max(num(h, 'probe_until'), now + lease)
        verdict = 1
      }
    }
    data.set(key!, h, ttl)
    return flatten(verdict, h)
  },
})

export const readScript = defineStoreScript<ScriptFields>({
  name: 'tollgate_breaker_read',
  lua: await Bun.file(new URL('./read.lua', import.meta.url)).text(),
  numberOfKeys: 1,
  runInMemory(data, [key]) {
    return Object.entries(data.get<Fields>(key!) ?? {}).flat()
  },
})
