/**
 * Startup before the dependencies answer. Postgres: the process does not exit; it retries
 * with backoff while /health/live answers 200 and /health/startup 503 names what it waits
 * for, then serves once the database is reachable (Postgres is "down" behind a TCP proxy the
 * test cuts). Redis: the same wait and report, until a redis-server starts on the port; or,
 * when it never does, startup on the quota fallback once `redis.startup_wait_ms` is over.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Subprocess } from 'bun'
import { type TcpProxy, tcpProxy } from '../bench/lib/tcp-proxy'
import { freshPostgresDatabase, type ThrowawayPostgres } from './support/db'
import { adminKey } from './support/gateway'
import { type RedisServer, startRedisServer } from './support/redis'

const mainPath = resolve(import.meta.dir, '../src/main.ts')
const children: Subprocess<'ignore', 'pipe', 'pipe'>[] = []
const databases: ThrowawayPostgres[] = []
const redisServers: RedisServer[] = []
let proxy: TcpProxy | undefined
let configDir: string | undefined

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  proxy?.stop()
  for (const server of redisServers) await server.kill()
  for (const database of databases) await database.drop()
  if (configDir) await rm(configDir, { recursive: true, force: true })
})

function sparePort(): number {
  const listener = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = listener.port
  listener.stop(true)
  return port
}

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe().catch(() => undefined)
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms`)
    await Bun.sleep(100)
  }
}

/** Starts src/main.ts as operators do; the config file, when given, is written for TOLLGATE_CONFIG. */
async function spawnGateway(env: Record<string, string>, file?: Record<string, unknown>) {
  const port = sparePort()
  let configPath: Record<string, string> = {}
  if (file) {
    configDir ??= await mkdtemp(join(tmpdir(), 'tollgate-startup-'))
    const path = join(configDir, `${port}.json`)
    await Bun.write(path, JSON.stringify(file))
    configPath = { TOLLGATE_CONFIG: path }
  }
  const child = Bun.spawn([process.execPath, 'run', mainPath], {
    env: {
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'production',
      PORT: String(port),
      HOST: '127.0.0.1',
      ADMIN_API_KEY: adminKey,
      LOG_LEVEL: 'error',
      ...configPath,
      ...env,
    },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  children.push(child)
  return { child, base: `http://127.0.0.1:${port}` }
}

interface StartupReport {
  message: string
  waiting_for: string | null
  attempts: number
  error: string | null
}

async function startupReport(base: string, waitingFor: string): Promise<StartupReport> {
  return until(
    async () => {
      const response = await fetch(`${base}/health/startup`)
      if (response.status !== 503) return undefined
      const report = (await response.json()) as StartupReport
      return report.waiting_for === waitingFor ? report : undefined
    },
    15_000,
    `the startup probe did not answer 503 waiting for ${waitingFor}`,
  )
}

async function started(base: string, timeoutMs: number): Promise<void> {
  await until(
    async () => ((await fetch(`${base}/health/startup`)).status === 200 ? true : undefined),
    timeoutMs,
    'startup did not complete',
  )
}

async function chatWithNewKey(base: string): Promise<Response> {
  const created = await fetch(`${base}/admin/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: 'startup', name: 'startup', tier: 'free' }),
  })
  expect(created.status).toBe(201)
  const { key } = (await created.json()) as { key: string }
  return fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'sim-1', messages: [{ role: 'user', content: 'hello' }], max_tokens: 3 }),
  })
}

describe('startup while Postgres is down', () => {
  test('waits with backoff, says so on /health/startup, then serves', async () => {
    const database = await freshPostgresDatabase()
    databases.push(database)
    proxy = tcpProxy(database.url)
    proxy.cut()
    const { child, base } = await spawnGateway({ DATABASE_URL: proxy.url })

    const waiting = await startupReport(base, 'the database')
    expect(waiting.message).toContain('the database')
    expect((await fetch(`${base}/health/live`)).status).toBe(200)
    expect((await fetch(`${base}/health/ready`)).status).toBe(503)
    await Bun.sleep(600)
    expect(child.exitCode).toBeNull()
    const later = await startupReport(base, 'the database')
    expect(later.attempts).toBeGreaterThan(1)
    expect(later.error).toContain('Cannot open Postgres')

    proxy.restore()
    await started(base, 20_000)
    expect((await fetch(`${base}/health/ready`)).status).toBe(200)
    const keys = await fetch(`${base}/admin/keys`, { headers: { authorization: `Bearer ${adminKey}` } })
    expect(keys.status).toBe(200)

    child.kill('SIGTERM')
    expect(await child.exited).toBe(0)
  }, 60_000)
})

describe('startup while Redis is down', () => {
  test('waits for it with backoff, says so on /health/startup, then serves once it answers', async () => {
    const database = await freshPostgresDatabase()
    databases.push(database)
    const redisPort = sparePort()
    const { child, base } = await spawnGateway({
      DATABASE_URL: database.url,
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    })

    const waiting = await startupReport(base, 'redis')
    expect(waiting.message).toBe('starting: waiting for redis')
    expect(waiting.attempts).toBeGreaterThanOrEqual(1)
    expect((await fetch(`${base}/health/live`)).status).toBe(200)
    expect((await fetch(`${base}/health/ready`)).status).toBe(503)
    await Bun.sleep(800)
    const later = await startupReport(base, 'redis')
    expect(later.attempts).toBeGreaterThan(waiting.attempts)
    expect(later.error).toBeTruthy()
    expect(child.exitCode).toBeNull()

    redisServers.push(await startRedisServer(redisPort))
    await started(base, 15_000)
    const ready = (await (await fetch(`${base}/health/ready`)).json()) as {
      status: string
      components: Record<string, { status: string }>
    }
    expect(ready.components.redis!.status).toBe('healthy')
    const answer = await chatWithNewKey(base)
    expect(answer.status).toBe(200)
    expect(answer.headers.get('ratelimit-policy')).not.toBeNull()

    child.kill('SIGTERM')
    expect(await child.exited).toBe(0)
  }, 60_000)

  test('past redis.startup_wait_ms it starts anyway, degraded, on the quota fallback', async () => {
    const database = await freshPostgresDatabase()
    databases.push(database)
    const { child, base } = await spawnGateway(
      { DATABASE_URL: database.url, REDIS_URL: `redis://127.0.0.1:${sparePort()}` },
      { redis: { startup_wait_ms: 1_500 } },
    )
    await startupReport(base, 'redis')
    await started(base, 15_000)
    const response = await fetch(`${base}/health/ready`)
    expect(response.status).toBe(200)
    const ready = (await response.json()) as {
      status: string
      components: Record<string, { status: string }>
    }
    expect(ready.status).toBe('degraded')
    expect(ready.components.redis!.status).toBe('degraded')
    expect((await chatWithNewKey(base)).status).toBe(200)

    child.kill('SIGTERM')
    expect(await child.exited).toBe(0)
  }, 60_000)
})
