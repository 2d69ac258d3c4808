/**
 * Authentication while Postgres is down, through a real gateway whose database sits behind
 * a proxy the test takes down two ways: refusing connections (a stopped server) and
 * swallowing every byte (a dead network path, where each query waits on silence). Either
 * way: a key in use keeps working long past its cache TTL, served from its last known entry;
 * a key never seen gets 503 auth_unavailable within the lookup timeout; no request waits
 * longer than that bound, model calls included (the ledger writes behind); and once the
 * database answers again a key revoked meanwhile is refused within the usual bound.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import postgres from 'postgres'
import { tcpProxy } from '../bench/lib/tcp-proxy'
import { generateKey } from '../plugins/auth/keys'
import { type CostGateway, startCostGateway } from './support/cost'
import { freshPostgresDatabase, type ThrowawayPostgres } from './support/db'

const ttlMs = 300
const lookupTimeoutMs = 200
/** The key cache's pause after a failed read, before the database is asked again. */
const failureBackoffMs = 1_000
/** What a request may take on top of the lookup timeout: the simulator's answer, scheduling. */
const slackMs = 300

interface Outage {
  url: string
  down(): void
  up(): void
  stop(): void
}

const outages: Record<string, (url: string) => Outage> = {
  'refusing connections': (url) => {
    const proxy = tcpProxy(url)
    return { url: proxy.url, down: proxy.cut, up: proxy.restore, stop: proxy.stop }
  },
  'swallowing every byte': (url) => {
    const proxy = tcpProxy(url)
    return { url: proxy.url, down: proxy.partition, up: proxy.heal, stop: proxy.stop }
  },
}

interface Timed {
  status: number
  ms: number
  headers: Headers
  body: string
}

async function timed(request: Promise<Response>): Promise<Timed> {
  const started = performance.now()
  const response = await request
  const body = await response.text()
  return { status: response.status, ms: performance.now() - started, headers: response.headers, body }
}

for (const [name, makeOutage] of Object.entries(outages)) {
  describe(`authentication while Postgres is down (${name})`, () => {
    let database: ThrowawayPostgres
    let outage: Outage
    let gateway: CostGateway
    /** Past the proxy, as an operator's revocation during the outage would be (another instance). */
    let direct: postgres.Sql

    beforeAll(async () => {
      database = await freshPostgresDatabase()
      outage = makeOutage(database.url)
      direct = postgres(database.url, { max: 1, onnotice: () => {} })
      gateway = await startCostGateway({
        env: { DATABASE_URL: outage.url },
        file: {
          auth: {
            key_cache_ttl_ms: ttlMs,
            lookup_timeout_ms: lookupTimeoutMs,
            stale_while_unavailable_ms: 60_000,
          },
          ledger: { retry_initial_ms: 50, retry_max_ms: 200, shutdown_timeout_ms: 500 },
        },
      })
    }, 30_000)

    afterAll(async () => {
      outage?.up()
      await gateway?.stop()
      await direct?.end({ timeout: 1 })
      outage?.stop()
      await database?.drop()
    }, 15_000)

    const models = (key: string) =>
      timed(fetch(`${gateway.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } }))
    const chat = (key: string, i: number) =>
      timed(
        fetch(`${gateway.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({
            model: 'sim-1',
            messages: [{ role: 'user', content: `outage ${i}` }],
            max_tokens: 3,
          }),
        }),
      )

    test('known keys keep working past their TTL, unknown keys get a fast 503, revocations apply once it is back', async () => {
      const busy = await gateway.createKey('busy')
      const doomed = await gateway.createKey('doomed')
      const stranger = generateKey()
      expect((await chat(busy.key, -1)).status).toBe(200)
      expect((await models(doomed.key)).status).toBe(200)
      expect((await models(stranger)).status).toBe(401)

      outage.down()
      await direct`update api_keys set revoked_at = now() where id = ${doomed.id}`
      // Every cache entry is expired before the first request of the outage.
      await Bun.sleep(ttlMs * 2)
      const during: Timed[] = []
      const started = performance.now()
      for (let i = 0; performance.now() - started < 3 * failureBackoffMs; i++) {
        const [model, known, revoked] = await Promise.all([
          chat(busy.key, i),
          models(busy.key),
          models(doomed.key),
        ])
        expect([model.status, known.status]).toEqual([200, 200])
        // The revocation cannot be read from a database that does not answer: fail static.
        expect(revoked.status).toBe(200)
        during.push(model, known, revoked)
        const unknown = await models(generateKey())
        expect(unknown.status).toBe(503)
        expect(JSON.parse(unknown.body)).toMatchObject({ error: { code: 'auth_unavailable' } })
        expect(Number(unknown.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
        during.push(unknown)
        await Bun.sleep(50)
      }
      const slowest = Math.max(...during.map((request) => request.ms))
      expect(slowest).toBeLessThan(lookupTimeoutMs + slackMs)

      const strangerAgain = await models(stranger)
      expect(strangerAgain.status).toBe(401)

      outage.up()
      const restoredAt = performance.now()
      let refusedAfter: number | null = null
      while (refusedAfter === null && performance.now() - restoredAt < 10_000) {
        const [known, revoked] = await Promise.all([models(busy.key), models(doomed.key)])
        expect(known.status).toBe(200)
        expect(known.ms).toBeLessThan(lookupTimeoutMs + slackMs)
        if (revoked.status === 401) refusedAfter = performance.now() - restoredAt
        else expect(revoked.status).toBe(200)
        await Bun.sleep(50)
      }
      expect(refusedAfter).not.toBeNull()
      // The next read after the backoff sees the revocation; a proxy reset may cost one more.
      expect(refusedAfter!).toBeLessThan(2 * failureBackoffMs + ttlMs + lookupTimeoutMs)
      const fresh = await gateway.createKey('after')
      expect((await chat(fresh.key, 1_000)).status).toBe(200)
    }, 30_000)
  })
}
