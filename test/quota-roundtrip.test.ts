/**
 * One Redis round trip per request on the request path, counted two ways on a private
 * redis-server: `INFO commandstats` (what Redis executed for one request: two admission and
 * two settlement scripts, each reading Redis' clock once), and a TCP proxy between gateway
 * and Redis that records each write the gateway makes (admission = one write holding both
 * scripts, user and global; settlement = one more write, after the answer).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createClient, type RedisClientType } from 'redis'
import { requirePostgres } from './support/db'
import { eventually, type Gateway, startGateway } from './support/gateway'
import { chat, storeReady, uniqueUser } from './support/quota'
import { luaSha1, type RedisServer, startRedisServer } from './support/redis'
import { type RedisProxy, startRedisProxy } from './support/redis-proxy'

let redis: RedisServer
let proxy: RedisProxy
let gateway: Gateway
let direct: RedisClientType

beforeAll(async () => {
  redis = await startRedisServer()
  proxy = startRedisProxy(redis.port)
  gateway = await startGateway({
    env: {
      REDIS_URL: `redis://127.0.0.1:${proxy.port}`,
      DATABASE_URL: await requirePostgres(),
      REDIS_KEY_PREFIX: 'tg:',
    },
  })
  await storeReady(gateway.runtime.store)
  direct = createClient({ url: redis.url })
  await direct.connect()
})

afterAll(async () => {
  direct?.destroy()
  await gateway?.stop()
  proxy?.stop()
  await redis?.kill()
})

async function commandStats(): Promise<Record<string, number>> {
  const stats: Record<string, number> = {}
  for (const match of (await direct.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm))
    stats[match[1]!] = Number(match[2])
  return stats
}

describe('one Redis round trip per request', () => {
  for (const stream of [false, true]) {
    test(`admission is one write of two EVALSHA, settlement one more (stream: ${stream})`, async () => {
      const user = uniqueUser('rt')
      const key = await gateway.createKey(user, 'free')
      // Warm up: the first call of a script on a fresh server loads it (NOSCRIPT, then EVAL).
      await (await chat(gateway.url, key, { max_tokens: 4 })).text()
      await eventually(() => gateway.settled.length > 0 && gateway.settled.at(-1)!.principal?.userId === user)
      // The breaker's next sync sends the warm-up's success, and so loads its record script too.
      const recordSha = await luaSha1('breaker', 'record.lua')
      for (let waited = 0; !(await direct.scriptExists(recordSha))[0]; waited += 10) {
        expect(waited).toBeLessThan(2000)
        await Bun.sleep(10)
      }
      const settledBefore = gateway.settled.length
      await direct.configResetStat()
      proxy.writes.length = 0

      const response = await chat(gateway.url, key, { max_tokens: 4, stream })
      expect(response.status).toBe(200)
      await response.text()
      await eventually(() => gateway.settled.length === settledBefore + 1)
      const [admitSha, settleSha] = [
        await luaSha1('quota', 'admit.lua'),
        await luaSha1('quota', 'settle.lua'),
      ]
      const isQuota = (command: string[]) => command[1] === admitSha || command[1] === settleSha
      await eventually(() => proxy.writes.filter((write) => write.some(isQuota)).length >= 2)

      // The breaker syncs with Redis in the background (every 500 ms): it reads its state or
      // sends its batched successes, off the request path; they may land in this window, so
      // they are set apart.
      const background = proxy.writes.flat().filter((command) => !isQuota(command))
      for (const [name, , , key] of background) {
        expect(name).toBe('EVALSHA')
        expect(key).toStartWith('tg:{b:')
      }
      const summary = proxy.writes
        .map((write) =>
          write.filter(isQuota).map(([name, sha, , ...keys]) => [name, sha, ...keys.slice(0, 2)]),
        )
        .filter((write) => write.length > 0)
      expect(summary).toEqual([
        [
          ['EVALSHA', admitSha, `tg:{u:${user}}:q`, `tg:{u:${user}}:leases`],
          ['EVALSHA', admitSha, 'tg:{global}:q', 'tg:{global}:leases'],
        ],
        [
          ['EVALSHA', settleSha, `tg:{u:${user}}:q`, `tg:{u:${user}}:leases`],
          ['EVALSHA', settleSha, 'tg:{global}:q', 'tg:{global}:leases'],
        ],
      ])
      // Redis executed what the proxy saw: the 4 quota scripts and any background reads
      // (one more may slip in while stats are read), no EVAL (the scripts were cached).
      // commandstats also counts the commands scripts call inside, so only these are compared.
      await Bun.sleep(20)
      const stats = await commandStats()
      const backgroundAfter = proxy.writes.flat().filter((command) => !isQuota(command)).length
      expect(stats.evalsha).toBeGreaterThanOrEqual(4 + background.length)
      expect(stats.evalsha).toBeLessThanOrEqual(4 + backgroundAfter)
      expect(stats.eval).toBeUndefined()
    })
  }
})
