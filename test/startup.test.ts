/**
 * Startup before Postgres answers: the process does not exit; it retries with backoff while
 * /health/live answers 200 and /health/startup 503 names what it waits for, then serves
 * once the database is reachable. Postgres is "down" behind a TCP proxy the test cuts.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { resolve } from 'node:path'
import type { Subprocess } from 'bun'
import { tcpProxy } from './support/cost'
import { freshPostgresDatabase, type ThrowawayPostgres } from './support/db'
import { adminKey } from './support/gateway'

const mainPath = resolve(import.meta.dir, '../src/main.ts')
let child: Subprocess<'ignore', 'pipe', 'pipe'> | undefined
let database: ThrowawayPostgres | undefined
let proxy: ReturnType<typeof tcpProxy> | undefined

afterAll(async () => {
  child?.kill('SIGKILL')
  proxy?.stop()
  await database?.drop()
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

describe('startup while Postgres is down', () => {
  test('waits with backoff, says so on /health/startup, then serves', async () => {
    database = await freshPostgresDatabase()
    proxy = tcpProxy(database.url)
    proxy.cut()
    const port = sparePort()
    const base = `http://127.0.0.1:${port}`
    child = Bun.spawn([process.execPath, 'run', mainPath], {
      env: {
        PATH: process.env.PATH ?? '',
        NODE_ENV: 'production',
        PORT: String(port),
        HOST: '127.0.0.1',
        ADMIN_API_KEY: adminKey,
        DATABASE_URL: proxy.url,
        LOG_LEVEL: 'error',
      },
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'pipe',
    })

    const waiting = await until(
      async () => {
        const response = await fetch(`${base}/health/startup`)
        return response.status === 503 ? ((await response.json()) as { message: string }) : undefined
      },
      15_000,
      'the startup probe did not answer 503',
    )
    expect(waiting.message).toContain('the database')
    expect((await fetch(`${base}/health/live`)).status).toBe(200)
    expect((await fetch(`${base}/health/ready`)).status).toBe(503)
    await Bun.sleep(600)
    expect(child.exitCode).toBeNull()

    proxy.restore()
    await until(
      async () => ((await fetch(`${base}/health/startup`)).status === 200 ? true : undefined),
      20_000,
      'startup did not complete after the database came back',
    )
    expect((await fetch(`${base}/health/ready`)).status).toBe(200)
    const keys = await fetch(`${base}/admin/keys`, { headers: { authorization: `Bearer ${adminKey}` } })
    expect(keys.status).toBe(200)

    child.kill('SIGTERM')
    expect(await child.exited).toBe(0)
  }, 60_000)
})
