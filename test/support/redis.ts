/**
 * Real Redis for tests: the shared server on 127.0.0.1:6379 (required, never skipped), and
 * throwaway servers and clusters that a test may kill, pause and restart without disturbing
 * anyone else. Every process started here is killed when the test process exits, even when
 * a test forgets to, so no stray redis-server outlives a run.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'

const HOST = '127.0.0.1'
export const REDIS_START_COMMAND =
  'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'

/** Unique per test process, so parallel runs and leftovers of old runs never share keys. */
export const runKeyPrefix = `tg-test:${process.pid}-${Date.now().toString(36)}:`

/** A key prefix for one test file or suite, inside this run's prefix. */
export function testKeyPrefix(name: string): string {
  return `${runKeyPrefix}${name}:`
}

/** The URL of the shared Redis; throws (does not skip) with the command that starts it. */
export async function requireRedis(): Promise<string> {
  if (await redisAnswers(6379)) return `redis://${HOST}:6379`
  throw new Error(`Redis is not answering on ${HOST}:6379. Start it with:\n  ${REDIS_START_COMMAND}`)
}

export interface RedisServer {
  url: string
  port: number
  /** SIGKILL, as a crash would. */
  kill(): Promise<void>
  /** Starts it again on the same port (empty: nothing is persisted) and waits until it answers. */
  restart(): Promise<void>
  /** SIGSTOP: the socket stays open but nothing answers, like a hung server or a partition. */
  pause(): void
  resume(): void
}

/** A private redis-server on a spare port (or `port`), for tests that break it. */
export async function startRedisServer(port?: number): Promise<RedisServer> {
  const chosen = port ?? (await sparePort())
  let proc = await spawnRedis(['--port', String(chosen), '--bind', HOST, '--save', '', '--appendonly', 'no'])
  return {
    url: `redis://${HOST}:${chosen}`,
    port: chosen,
    async kill() {
      await stopProcess(proc)
    },
    async restart() {
      await stopProcess(proc)
      proc = await spawnRedis(['--port', String(chosen), '--bind', HOST, '--save', '', '--appendonly', 'no'])
    },
    pause() {
      proc.kill('SIGSTOP')
    },
    resume() {
      proc.kill('SIGCONT')
    },
  }
}

export interface RedisCluster {
  /** Comma-separated `host:port` of the masters, as `REDIS_CLUSTER_NODES` takes them. */
  nodes: string
  ports: number[]
  stop(): Promise<void>
}

/** Three cluster-enabled masters on spare ports, joined with `redis-cli --cluster create`. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'tollgate-cluster-'))
  const ports: number[] = []
  const procs: Subprocess[] = []
  const stop = async () => {
    await Promise.all(procs.map(stopProcess))
    await rm(dir, { recursive: true, force: true })
  }
  try {
    for (let i = 0; i < 3; i++) ports.push(await sparePort())
    for (const port of ports) {
      procs.push(
        await spawnRedis([
          ...['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', dir],
          ...['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`],
        ]),
      )
    }
    const create = Bun.spawn(
      ['redis-cli', '--cluster', 'create', ...ports.map((port) => `${HOST}:${port}`)].concat([
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ]),
      { stdout: 'pipe', stderr: 'pipe' },
    )
    if ((await create.exited) !== 0) {
      const output = (await new Response(create.stdout).text()) + (await new Response(create.stderr).text())
      throw new Error(`redis-cli --cluster create failed:\n${output}`)
    }
    // Every node must agree the slots are covered, or the client may discover a partial map.
    await Promise.all(ports.map((port) => waitFor(() => clusterOk(port), 10_000, `cluster node ${port}`)))
    return { nodes: ports.map((port) => `${HOST}:${port}`).join(','), ports, stop }
  } catch (error) {
    await stop()
    throw error
  }
}

/** Polls until `check` holds; throws after `timeoutMs` naming what it waited for. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what = 'condition',
) {
  const deadline = performance.now() + timeoutMs
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await Bun.sleep(20)
  }
}

const children = new Set<Subprocess>()
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

async function spawnRedis(args: string[]): Promise<Subprocess> {
  const port = Number(args[args.indexOf('--port') + 1])
  const proc = Bun.spawn(['redis-server', ...args], { stdout: 'ignore', stderr: 'pipe' })
  children.add(proc)
  try {
    await waitFor(
      async () => proc.exitCode === null && (await redisAnswers(port)),
      5_000,
      `redis-server :${port}`,
    )
  } catch (error) {
    await stopProcess(proc)
    throw error
  }
  return proc
}

async function stopProcess(proc: Subprocess): Promise<void> {
  children.delete(proc)
  if (proc.exitCode !== null || proc.signalCode !== null) return
  proc.kill('SIGKILL')
  await proc.exited
}

const handedOut = new Set<number>()

/** A port that is free, and whose cluster bus port (+10000) is free too. */
async function sparePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 30_000)
    if (handedOut.has(port) || !portFree(port) || !portFree(port + 10_000)) continue
    handedOut.add(port)
    return port
  }
  throw new Error('no spare port found')
}

function portFree(port: number): boolean {
  try {
    const listener = Bun.listen({ hostname: HOST, port, socket: { data() {} } })
    listener.stop(true)
    return true
  } catch {
    return false
  }
}

function redisAnswers(port: number): Promise<boolean> {
  return ask(port, 'PING', (reply) => reply.startsWith('+PONG'))
}

function clusterOk(port: number): Promise<boolean> {
  return ask(port, 'CLUSTER INFO', (reply) => reply.includes('cluster_state:ok'))
}

/** Sends one inline command over raw TCP: no client library, so it works before any is set up. */
function ask(port: number, command: string, accept: (reply: string) => boolean, timeoutMs = 300) {
  return new Promise<boolean>((resolve) => {
    let reply = ''
    let settled = false
    const finish = (ok: boolean) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(ok)
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    Bun.connect({
      hostname: HOST,
      port,
      socket: {
        open: (socket) => void socket.write(`${command}\r\n`),
        data: (socket, chunk) => {
          reply += chunk.toString()
          if (accept(reply)) {
            finish(true)
            socket.end()
          }
        },
        close: () => finish(false),
        error: () => finish(false),
        connectError: () => finish(false),
      },
    }).catch(() => finish(false))
  })
}

/**
 * The SHA1 of a plugin's Lua script as it is on disk, computed here and not taken from the
 * plugin, so a test can tell which script a captured EVALSHA ran.
 */
export async function luaSha1(plugin: string, file: string): Promise<string> {
  const source = await Bun.file(join(import.meta.dir, '..', '..', 'plugins', plugin, file)).text()
  return new Bun.CryptoHasher('sha1').update(source).digest('hex')
}
