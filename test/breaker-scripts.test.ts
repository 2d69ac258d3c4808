/**
 * The Lua scripts and their in-memory twins agree: the same seeded sequence of outcomes and
 * probe requests, at the same instants, leaves the same hash and gets the same answers on
 * the shared Redis and on the memory store. Each instance decides on the twin while Redis
 * holds the shared truth, so a drift between them would be a split brain.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { acquireScript, fieldsOf, readScript, recordScript } from '../plugins/breaker/scripts'
import { MemoryStore, RedisStore, type ScriptArg } from '../plugins/store'
import { requireRedis, testKeyPrefix } from './support/redis'

let redis: RedisStore

beforeAll(async () => {
  redis = new RedisStore({ url: await requireRedis(), keyPrefix: testKeyPrefix('breaker-scripts') })
  expect(await redis.waitUntilAvailable(2000)).toBe(true)
})
afterAll(() => redis.close())

/** mulberry32: the same sequence on every run. */
function seeded(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const normalised = (reply: unknown[], from: number) => {
  const fields = fieldsOf(reply as Array<string | number>, from)
  return Object.fromEntries(
    Object.entries(fields).map(([k, v]) => [k, k === 'failure' ? String(v) : Number(v)]),
  )
}

test('record, acquire and read answer alike on Redis and in memory', async () => {
  let now = 1_900_000_000_000
  const memory = new MemoryStore({ now: () => now, sweepIntervalMs: 0 })
  const random = seeded(42)
  const key = `{b:parity-${crypto.randomUUID()}}`
  let probes = 0
  const seen = new Set<string>()
  for (let step = 0; step < 300; step++) {
    now += Math.floor(random() * 9_000)
    let args: ScriptArg[]
    let script = recordScript
    if (random() < 0.3) {
      script = acquireScript
      args = [now, 20_000, 1, 700_000]
    } else {
      const roll = random()
      const outcome = roll < 0.5 ? 'f' : roll < 0.85 ? 's' : roll < 0.9 ? 'r' : 'n'
      const probe = probes > 0 && outcome !== 'n' && random() < 0.7
      // Successes batched by an instance: sometimes none, sometimes from a bucket that has left the window.
      const batched = random() < 0.5 ? 0 : 1 + Math.floor(random() * 20)
      const batchedAt = now - Math.floor(random() * 80_000)
      args = [now, outcome, probe ? 1 : 0, 'http 500', 60_000, 10, 5, 0.5, 10, 30_000, 300_000, 2, 700_000]
      args.push(batched, batchedAt)
    }
    const [onRedis, inMemory] = await Promise.all([
      redis.run(script, [key], args),
      memory.run(script, [key], args),
    ])
    expect({ step, head: Number(onRedis[0]) || onRedis[0] }).toEqual({
      step,
      head: Number(inMemory[0]) || inMemory[0],
    })
    expect({ step, fields: normalised(onRedis, 1) }).toEqual({ step, fields: normalised(inMemory, 1) })
    if (script === acquireScript && Number(onRedis[0]) === 1) probes++
    seen.add(`state:${normalised(onRedis, 1).state ?? 0}`).add(`${script.name}:${onRedis[0]}`)
  }
  // The walk went through every state and every answer of both scripts.
  for (const visited of [
    'state:0',
    'state:1',
    'state:2',
    'tollgate_breaker_record:open',
    'tollgate_breaker_record:closed',
  ])
    expect(seen).toContain(visited)
  for (const verdict of [0, 1, 2]) expect(seen).toContain(`tollgate_breaker_acquire:${verdict}`)
  const [read, readLocal] = await Promise.all([
    redis.run(readScript, [key], []),
    memory.run(readScript, [key], []),
  ])
  expect(normalised(read, 0)).toEqual(normalised(readLocal, 0))
  await memory.close()
}, 30_000)
