/**
 * The cache's share of the hot path budget, counted by a TCP proxy between the gateway and
 * a private redis-server that records the command names of each write the gateway makes: a
 * cacheable request's lookup (epoch, namespace version, entry) travels in the same write as
 * the quota admission, so a hit costs one round trip before its answer; the entry of a miss
 * is written after the answer, in the same write as the quota settlement.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { requirePostgres } from './support/db'
import { eventually, type Gateway, startGateway } from './support/gateway'
import { type RedisServer, startRedisServer } from './support/redis'
import { type RedisProxy, startRedisProxy } from './support/redis-proxy'

let redis: RedisServer
let proxy: RedisProxy
const breakerReadSha = new Bun.CryptoHasher('sha1')
  .update(await Bun.file(join(import.meta.dir, '..', 'plugins', 'breaker', 'read.lua')).text())
  .digest('hex')
let gateway: Gateway
let key: string

beforeAll(async () => {
  redis = await startRedisServer()
  proxy = startRedisProxy(redis.port)
  gateway = await startGateway({
    env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}`, DATABASE_URL: await requirePostgres() },
  })
  await eventually(() => gateway.runtime.store.available, 5_000)
  key = await gateway.createKey()
}, 30_000)

afterAll(async () => {
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
  // The breaker refreshes its state in the background (off the request path): not counted.
  const background = (write: string[][]) =>
    write.every((command) => command[0]!.toUpperCase() === 'EVALSHA' && command[1] === breakerReadSha)
  return proxy.writes
    .filter((write) => !background(write))
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
    // An upstream call also tells the shared breaker its outcome, after the answer.
    const breakerRecord = ['EVALSHA']
    expect(await writesOf('a question')).toEqual([admission, breakerRecord, settlementWithEntry])
    // The same question streamed: a hit, no upstream call.
    expect(await writesOf('a question', true)).toEqual([admission, settlement])
    expect(await writesOf('a streamed question', true)).toEqual([
      admission,
      breakerRecord,
      settlementWithEntry,
    ])
  })
})
