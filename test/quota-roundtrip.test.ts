/**
 * One Redis round trip per request on the request path, counted two ways on a private
 * redis-server: `INFO commandstats` (what Redis executed for one request: two admission and
 * two settlement scripts, each reading Redis' clock once), and a TCP proxy between gateway
 * and Redis that records each write the gateway makes (admission = one write holding both
 * scripts, user and global; settlement = one more write, after the answer).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import type { Socket, TCPSocketListener } from 'bun'
import { createClient, type RedisClientType } from 'redis'
import { requirePostgres } from './support/db'
import { eventually, type Gateway, startGateway } from './support/gateway'
import { chat, storeReady, uniqueUser } from './support/quota'
import { type RedisServer, startRedisServer } from './support/redis'

/** Complete RESP commands at the front of `buffer`, and what is left of it. */
function takeCommands(buffer: Buffer): { commands: string[][]; rest: Buffer } {
  const commands: string[][] = []
  let at = 0
  const line = (from: number) => {
    const end = buffer.indexOf('\r\n', from)
    return end < 0 ? null : { text: buffer.toString('latin1', from, end), next: end + 2 }
  }
  parsing: while (at < buffer.length) {
    const header = line(at)
    if (!header) break
    if (!header.text.startsWith('*')) throw new Error(`not a RESP array: ${header.text}`)
    const parts: string[] = []
    let next = header.next
    for (let i = 0; i < Number(header.text.slice(1)); i++) {
      const size = line(next)
      if (!size) break parsing
      const end = size.next + Number(size.text.slice(1))
      if (end + 2 > buffer.length) break parsing
      parts.push(buffer.toString('utf8', size.next, end))
      next = end + 2
    }
    commands.push(parts)
    at = next
  }
  return { commands, rest: buffer.subarray(at) }
}

interface Proxy {
  port: number
  /** Each write the gateway made, as the commands it carried. */
  writes: string[][][]
  stop(): void
}

/** Forwards every connection to `target`, recording what clients write. */
function startProxy(target: number): Proxy {
  const writes: string[][][] = []
  interface Side {
    upstream?: Socket<undefined>
    pending: Buffer[]
    partial: Buffer
  }
  const listener: TCPSocketListener<Side> = Bun.listen<Side>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open(client) {
        client.data = { pending: [], partial: Buffer.alloc(0) }
        void Bun.connect({
          hostname: '127.0.0.1',
          port: target,
          socket: {
            open(upstream) {
              client.data.upstream = upstream
              for (const chunk of client.data.pending.splice(0)) upstream.write(chunk)
            },
            data: (_upstream, chunk) => void client.write(chunk),
            close: () => void client.end(),
            error: () => void client.end(),
          },
        }).catch(() => client.end())
      },
      data(client, chunk) {
        const parsed = takeCommands(Buffer.concat([client.data.partial, chunk]))
        client.data.partial = Buffer.from(parsed.rest)
        if (parsed.commands.length > 0) writes.push(parsed.commands)
        if (client.data.upstream) client.data.upstream.write(chunk)
        else client.data.pending.push(Buffer.from(chunk))
      },
      close(client) {
        client.data.upstream?.end()
      },
    },
  })
  return { port: listener.port, writes, stop: () => listener.stop(true) }
}

const sha1Of = async (file: string) =>
  new Bun.CryptoHasher('sha1')
    .update(await Bun.file(join(import.meta.dir, '..', 'plugins', 'quota', file)).text())
    .digest('hex')

let redis: RedisServer
let proxy: Proxy
let gateway: Gateway
let direct: RedisClientType

beforeAll(async () => {
  redis = await startRedisServer()
  proxy = startProxy(redis.port)
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
      const settledBefore = gateway.settled.length
      await direct.configResetStat()
      proxy.writes.length = 0

      const response = await chat(gateway.url, key, { max_tokens: 4, stream })
      expect(response.status).toBe(200)
      await response.text()
      await eventually(() => gateway.settled.length === settledBefore + 1)
      const [admitSha, settleSha] = [await sha1Of('admit.lua'), await sha1Of('settle.lua')]
      const isQuota = (command: string[]) => command[1] === admitSha || command[1] === settleSha
      await eventually(() => proxy.writes.filter((write) => write.some(isQuota)).length >= 2)

      // The breaker refreshes its state from Redis in the background (every 500 ms); those
      // reads are off the request path and may land in this window, so they are set apart.
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
