/**
 * `/metrics` after a scripted mix of requests (answered, cached, denied by quota, failed
 * upstream, streamed) against a gateway on the real Redis and Postgres with the simulator
 * behind HTTP: the exposition parses strictly, and every counter the gateway records from
 * its own traffic holds exactly the value the client-side record of the mix predicts.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { startSimServer } from '../src/upstream/sim-server'
import { requirePostgres } from './support/db'
import { type Family, parseExposition } from './support/exposition'
import { adminKey, eventually, type Gateway, startGateway } from './support/gateway'
import { storeReady } from './support/quota'
import { requireRedis } from './support/redis'

interface WireUsage {
  prompt_tokens: number
  completion_tokens: number
}

const pricing = { input: 2, output: 3 }
let sim: Awaited<ReturnType<typeof startSimServer>>
let gateway: Gateway
let families: Map<string, Family>
/** What the client saw: one entry per chat request, in order. */
const seen: Array<{ name: string; status: number; usage: WireUsage | null }> = []

async function chat(name: string, key: string, body: Record<string, unknown>) {
  const response = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'remote-1',
      messages: [{ role: 'user', content: `prompt ${name}` }],
      ...body,
    }),
  })
  const text = await response.text()
  let usage: WireUsage | null = null
  if (response.status === 200 && body.stream) {
    for (const line of text.split('\n')) {
      if (!line.startsWith('data: {')) continue
      usage = (JSON.parse(line.slice(6)) as { usage?: WireUsage }).usage ?? usage
    }
  } else if (response.status === 200) usage = (JSON.parse(text) as { usage: WireUsage }).usage
  seen.push({ name, status: response.status, usage })
  return response
}

const cost = (usage: WireUsage | null) =>
  usage ? (usage.prompt_tokens * pricing.input + usage.completion_tokens * pricing.output) / 1e6 : 0

beforeAll(async () => {
  sim = await startSimServer()
  gateway = await startGateway({
    env: { REDIS_URL: await requireRedis(), DATABASE_URL: await requirePostgres() },
    file: {
      providers: { remote: { type: 'openai', base_url: sim.url } },
      models: { 'remote-1': { provider: 'remote', upstream_model: 'sim-1', pricing } },
      tiers: { tiny: { tokens_per_day: 1 } },
      // The global scope lives in the shared Redis, where other runs hold leases too.
      global: { concurrent: null },
    },
  })
  await storeReady(gateway.runtime.store)
  const pro = await gateway.createKey(undefined, 'pro')
  const tiny = await gateway.createKey(undefined, 'tiny')

  await chat('ok', pro, { temperature: 0.7 })
  await chat('miss', pro, { temperature: 0 })
  // The answer is stored at settlement: wait for it, or the repeat joins the first call instead.
  await eventually(() => gateway.settled.length === 2)
  await chat('hit', pro, { temperature: 0, messages: [{ role: 'user', content: 'prompt miss' }] })
  await chat('stream', pro, { temperature: 0.7, stream: true, stream_options: { include_usage: true } })
  await chat('denied', tiny, { temperature: 0.7 })
  // Last, so faults left over by fewer retries than expected cannot touch another request.
  sim.addFaults([{ status: 500, times: 10 }])
  await chat('error', pro, { temperature: 0.7 })
  sim.reset()

  // Each request is recorded once its Exchange has settled and every listener has run.
  await eventually(() => gateway.settled.length === 5)
  await Promise.all(gateway.settled.map((exchange) => exchange.settled))
  // The last answer's record runs just after its bytes left; the in-flight gauge below
  // (exactly the scrape itself) fails loudly if it ever has not.
  await Bun.sleep(50)
  const response = await fetch(`${gateway.url}/metrics`)
  expect(response.headers.get('content-type')).toStartWith('text/plain; version=0.0.4')
  families = parseExposition(await response.text())
})

afterAll(async () => {
  await gateway?.stop()
  await sim?.stop()
})

/** Every sample of a family as `labels => value`, labels in a stable order. */
function series(name: string, sampleName = name): Record<string, number> {
  const family = families.get(name)
  if (!family) throw new Error(`${name} is not exposed`)
  const out: Record<string, number> = {}
  for (const sample of family.samples.filter((s) => s.name === sampleName)) {
    const key = Object.entries(sample.labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join(',')
    out[key] = sample.value
  }
  return out
}

const statusOf = (name: string) => seen.find((entry) => entry.name === name)!.status
const usageOf = (name: string) => seen.find((entry) => entry.name === name)!.usage

describe('after the scripted mix', () => {
  test('the client saw what the mix scripts: answers, a cache hit, a 429, an upstream failure', () => {
    expect(seen.map((entry) => [entry.name, entry.status])).toEqual([
      ['ok', 200],
      ['miss', 200],
      ['hit', 200],
      ['stream', 200],
      ['denied', 429],
      ['error', statusOf('error')],
    ])
    expect(statusOf('error')).toBeGreaterThanOrEqual(500)
    expect(usageOf('stream')).not.toBeNull()
  })

  test('HTTP requests by method, route template and status; every one timed; none in flight', () => {
    const chatStatuses: Record<string, number> = {}
    for (const { status } of seen) {
      const key = `method=POST,route=/v1/chat/completions,status=${status}`
      chatStatuses[key] = (chatStatuses[key] ?? 0) + 1
    }
    expect(series('tollgate_http_requests_total')).toEqual({
      'method=POST,route=/admin/keys,status=201': 2,
      ...chatStatuses,
    })
    expect(
      series('tollgate_http_request_duration_seconds', 'tollgate_http_request_duration_seconds_count'),
    ).toEqual({
      'method=POST,route=/admin/keys': 2,
      'method=POST,route=/v1/chat/completions': 6,
    })
    // The scrape itself is the one request in flight while the text is rendered.
    expect(series('tollgate_http_requests_in_flight')).toEqual({ '': 1 })
    expect(series('tollgate_sse_streams_active')).toEqual({ '': 0 })
  })

  test('model requests by model, served model, tier and outcome', () => {
    expect(series('tollgate_model_requests_total')).toEqual({
      'model=remote-1,outcome=ok,served_model=remote-1,tier=pro': 3,
      'model=remote-1,outcome=cached,served_model=remote-1,tier=pro': 1,
      'model=remote-1,outcome=error,served_model=remote-1,tier=pro': 1,
      'model=remote-1,outcome=denied,served_model=none,tier=tiny': 1,
    })
  })

  test('tokens and cost of what went upstream; the saving of the cache hit', () => {
    const billed = ['ok', 'miss', 'stream'].map(usageOf)
    const input = billed.reduce((sum, usage) => sum + (usage?.prompt_tokens ?? 0), 0)
    const output = billed.reduce((sum, usage) => sum + (usage?.completion_tokens ?? 0), 0)
    expect(series('tollgate_tokens_total')).toEqual({
      'model=remote-1,tier=pro,type=input': input,
      'model=remote-1,tier=pro,type=output': output,
    })
    const spent = series('tollgate_cost_usd_total')
    expect(Object.keys(spent)).toEqual(['model=remote-1,tier=pro'])
    expect(spent['model=remote-1,tier=pro']).toBeCloseTo(
      billed.map(cost).reduce((a, b) => a + b, 0),
      12,
    )
    const saved = series('tollgate_cache_saved_usd_total')
    expect(Object.keys(saved)).toEqual(['model=remote-1,tier=pro'])
    expect(saved['model=remote-1,tier=pro']).toBeCloseTo(cost(usageOf('hit')), 12)
  })

  test('time to first token for the one stream', () => {
    expect(
      series('tollgate_time_to_first_token_seconds', 'tollgate_time_to_first_token_seconds_count'),
    ).toEqual({
      'model=remote-1': 1,
    })
  })

  test('cache lookups by cache and result, and the one entry stored', () => {
    // temperature 0 is cacheable: a miss then a hit; three others bypass the cache, and the
    // denied request's lookup is abandoned with its admission.
    expect(series('tollgate_cache_lookups_total')).toEqual({
      'cache=response,result=bypass': 3,
      'cache=response,result=hit': 1,
      'cache=response,result=miss': 1,
    })
    expect(series('tollgate_cache_stores_total')).toEqual({ 'cache=response': 1 })
    expect(series('tollgate_cache_stored_bytes_total')['cache=response']).toBeGreaterThan(0)
    expect(series('tollgate_cache_oversize_total')).toEqual({ '': 0 })
  })

  test('dependencies up, with their round trips; the build reported', () => {
    expect(series('tollgate_dependency_up')).toEqual({ 'dependency=database': 1, 'dependency=redis': 1 })
    const latency = series('tollgate_dependency_latency_seconds')
    expect(Object.keys(latency).sort()).toEqual(['dependency=database', 'dependency=redis'])
    expect(series('tollgate_build_info')).toEqual({ 'version=0.1.0': 1 })
  })

  test('process metrics are there under their standard names', () => {
    expect(families.get('process_cpu_seconds_total')?.type).toBe('counter')
    expect(families.get('process_resident_memory_bytes')?.type).toBe('gauge')
  })

  test('no label value holds a key, a prompt or a request id', () => {
    const text = [...families.values()].flatMap((f) => f.samples.flatMap((s) => Object.values(s.labels)))
    for (const value of text) {
      expect(value).not.toMatch(/^tg-/)
      expect(value).not.toContain(adminKey)
      expect(value).not.toContain('prompt')
    }
  })
})
