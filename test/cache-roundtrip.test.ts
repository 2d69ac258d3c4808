/**
 * The cache's share of the hot path budget, counted by a TCP proxy between the gateway and
 * a private redis-server that records the command names of each write the gateway makes: a
 * cacheable request's lookup (epoch, namespace version, entry) travels in the same write as
 * the quota admission, so a hit costs one round trip before its answer; the entry of a miss
 * is written after the answer, in the same write as the quota settlement. The breaker adds
 * nothing per request: it reads its state and sends its batched successes in the background.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createClient, type RedisClientType } from 'redis'
import { defaultBreakerPolicy } from '../plugins/breaker'
import { viewOf } from '../plugins/breaker/view'
import { requirePostgres } from './support/db'
import { adminKey, eventually, type Gateway, startGateway } from './support/gateway'
import { luaSha1, type RedisServer, startRedisServer } from './support/redis'
import { type RedisProxy, startRedisProxy } from './support/redis-proxy'

let redis: RedisServer
let proxy: RedisProxy
const [breakerReadSha, breakerRecordSha] = [
  await luaSha1('breaker', 'read.lua'),
  await luaSha1('breaker', 'record.lua'),
]
let gateway: Gateway
let key: string
let direct: RedisClientType

beforeAll(async () => {
  redis = await startRedisServer()
  proxy = startRedisProxy(redis.port)
  gateway = await startGateway({
    env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}`, DATABASE_URL: await requirePostgres() },
  })
  await eventually(() => gateway.runtime.store.available, 5_000)
  key = await gateway.createKey()
  direct = createClient({ url: redis.url })
  await direct.connect()
}, 30_000)

afterAll(async () => {
  direct?.destroy()
  await gateway?.stop()
  proxy?.stop()
  await redis?.kill()
})

/** The writes one chat request makes, from its start until it has settled. */
async function writesOf(content: string, stream = false): Promise<string[][]> {
  const settledBefore = gateway.settled.length
  proxy.writes.length = 0
  const response = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'sim-1', temperature: 0, stream, messages: [{ role: 'user', content }] }),
  })
  await response.text()
  await eventually(() => gateway.settled.length === settledBefore + 1)
  await Bun.sleep(20)
  // The breaker's background sync (off the request path) reads its state, or sends its batched
  // successes in place of the read (outcome n): not counted. Its first call of a script on the
  // fresh server may be the EVAL that follows a NOSCRIPT.
  const background = (command: string[]) => {
    const name = command[0]!.toUpperCase()
    const sha = name === 'EVAL' ? new Bun.CryptoHasher('sha1').update(command[1]!).digest('hex') : command[1]
    if (name !== 'EVALSHA' && name !== 'EVAL') return false
    return sha === breakerReadSha || (sha === breakerRecordSha && command[5] === 'n')
  }
  return proxy.writes
    .map((write) => write.filter((command) => !background(command)))
    .filter((write) => write.length > 0)
    .map((write) => write.map((command) => command[0]!.toUpperCase()).sort())
}

describe('cache lookups share the quota round trip', () => {
  test('lookup and admission in one write; a hit needs nothing else, a miss writes its entry with the settlement', async () => {
    // Warm up: the first call of a script on a fresh server loads it (NOSCRIPT, then EVAL).
    await writesOf('warm up')
    const admission = ['EVALSHA', 'EVALSHA', 'GET', 'GET', 'GET']
    const settlement = ['EVALSHA', 'EVALSHA']
    // A miss's settlement: quota reconciliation and the entry's SET leave in one write.
    const settlementWithEntry = ['EVALSHA', 'EVALSHA', 'SET']
    // A successful upstream call writes nothing to the breaker: its success joins a batch.
    expect(await writesOf('a question')).toEqual([admission, settlementWithEntry])
    // The same question streamed: a hit, no upstream call.
    expect(await writesOf('a question', true)).toEqual([admission, settlement])
    expect(await writesOf('a streamed question', true)).toEqual([admission, settlementWithEntry])
  })

  test("the upstream calls' successes reach the shared breaker with the next sync", async () => {
    const sent: string[][] = []
    const batched = () => sent.reduce((sum, command) => sum + Number(command[17]), 0)
    // Whatever earlier tests left batched goes out first: until a sync merely reads the target.
    proxy.writes.length = 0
    await eventually(() =>
      proxy.writes
        .flat()
        .some((command) => command[1] === breakerReadSha && command[3]!.endsWith('{b:sim:sim-1}')),
    )
    for (let i = 0; i < 3; i++) {
      await writesOf(`a batched question ${i}`)
      sent.push(...proxy.writes.flat().filter((command) => command[1] === breakerRecordSha))
    }
    // The background sync (every 500 ms) sends them as outcome n: all three, and no more.
    await eventually(() => {
      sent.push(...proxy.writes.flat().filter((command) => command[1] === breakerRecordSha))
      proxy.writes.length = 0
      return batched() >= 3
    }, 2_000)
    expect(sent.map((command) => command[5])).toEqual(sent.map(() => 'n'))
    expect(batched()).toBe(3)
    // Redis's window now holds every call the instance counted on its own copy.
    const response = await fetch(`${gateway.url}/admin/breakers`, {
      headers: { authorization: `Bearer ${adminKey}` },
    })
    const local = ((await response.json()) as { data: Array<{ target: string; calls: number }> }).data
    const fields = await direct.hGetAll(`${gateway.runtime.config.redis.keyPrefix}{b:sim:sim-1}`)
    const shared = viewOf('sim:sim-1', fields, defaultBreakerPolicy, Date.now())
    expect(shared.calls).toBe(local.find((view) => view.target === 'sim:sim-1')!.calls)
  })
})
