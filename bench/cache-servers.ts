/**
 * The servers of the cache benchmark (bench/cache.ts), each its own process so the load
 * generator never shares an event loop with what it measures: `sim` (the simulator server),
 * `bare` (answers fixed bytes and does nothing else: the floor of an HTTP round trip) and
 * `gateway` (tollgate with every plugin on, on the memory store or on Redis). Each announces
 * itself with one JSON line on stdout: its URL, and for a gateway an API key.
 */

export const ADMIN_KEY = 'bench-admin-key-0123456789'
export const MODEL = 'bench-1'
export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'

export interface Ready {
  url: string
  key?: string
}

/** One server of the bench, announced with one JSON line. */
async function serve(role: string, arg: string | undefined): Promise<void> {
  const { setLogLevel } = await import('../src/log')
  setLogLevel('silent')
  const announce = (ready: Ready) => console.log(JSON.stringify(ready))
  if (role === 'sim') {
    const { startSimServer } = await import('../src/upstream/sim-server')
    const sim = await startSimServer({ port: 0 })
    return announce({ url: sim.url.replace(/\/v1$/, '') })
  }
  if (role === 'bare') {
    const body = Buffer.from(arg ?? '', 'base64')
    const headers = { 'content-type': 'application/json' }
    const server = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => new Response(body, { headers }) })
    return announce({ url: `http://127.0.0.1:${server.port}` })
  }
  const { createApp } = await import('../src/app')
  const { buildConfig } = await import('../src/config')
  const { createRuntime } = await import('../src/runtime')
  const [store, simUrl, databaseUrl] = (arg ?? '').split(' ')
  const limits = { requests_per_minute: 1e8, requests_per_hour: 1e9, requests_per_day: 1e9 }
  const config = buildConfig(
    {
      ADMIN_API_KEY: ADMIN_KEY,
      DATABASE_URL: databaseUrl,
      ...(store === 'redis' ? { REDIS_URL } : {}),
    },
    {
      providers: { upstream: { type: 'openai', base_url: `${simUrl}/v1` } },
      models: {
        [MODEL]: { provider: 'upstream', upstream_model: 'sim-1', pricing: { input: 0.5, output: 1.5 } },
      },
      tiers: { enterprise: { ...limits, tokens_per_day: 1e12, cost_per_day_usd: 1e9, concurrent: 1e6 } },
      global: { concurrent: 1e6, requests_per_hour: 1e9, cost_per_day_usd: 1e9 },
      cache: { responses: { ttl_seconds: 600 }, stale_seconds: 0 },
    },
  )
  const runtime = await createRuntime(config)
  const { RedisStore } = await import('../plugins/store')
  if (runtime.store instanceof RedisStore && !(await runtime.store.waitUntilAvailable(5_000)))
    throw new Error(`Redis at ${REDIS_URL} does not answer`)
  const app = createApp(runtime).listen({ port: 0, hostname: '127.0.0.1' })
  const url = `http://127.0.0.1:${app.server!.port}`
  const created = await fetch(`${url}/admin/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: `bench-${store}`, name: 'bench', tier: 'enterprise' }),
  })
  announce({ url, key: ((await created.json()) as { key: string }).key })
}

if (import.meta.main) await serve(process.argv[2]!, process.argv[3])
