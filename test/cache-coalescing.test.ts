/**
 * Request coalescing end to end, on the memory store and on Redis: concurrent identical
 * misses make one upstream call and every client gets the whole answer (JSON or replayed
 * SSE); when that call fails, the waiting requests make their own calls instead of hanging.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { RedisStore } from '../plugins/store'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { requirePostgres } from './support/db'
import { eventually, type Gateway, startGateway } from './support/gateway'
import { requireRedis, testKeyPrefix } from './support/redis'

let sim: SimServer
beforeAll(async () => {
  sim = await startSimServer({ port: 0 })
})
afterAll(() => sim?.stop())

const upstreamCalls = () => sim.stats.chat + sim.stats.chatStream

/** The text of a JSON completion, or of an SSE stream's content deltas. */
function textOf(body: string, stream: boolean): string {
  if (!stream)
    return (JSON.parse(body) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message
      .content
  expect(body.trimEnd().endsWith('data: [DONE]')).toBe(true)
  return body
    .split('\n\n')
    .filter((frame) => frame.startsWith('data: {'))
    .map((frame) => JSON.parse(frame.slice(6)) as { choices: Array<{ delta: { content?: string } }> })
    .map((chunk) => chunk.choices[0]?.delta.content ?? '')
    .join('')
}

for (const backend of ['memory', 'redis'] as const) {
  describe(`coalescing on ${backend}`, () => {
    let gateway: Gateway
    let key: string

    beforeAll(async () => {
      const prefix = testKeyPrefix(`coalesce-${crypto.randomUUID()}`)
      gateway = await startGateway({
        env: { DATABASE_URL: await requirePostgres() },
        ...(backend === 'redis' ? { store: await connectedStore(prefix) } : {}),
        file: {
          // The simulator takes 100 ms before answering: long enough for every request to arrive.
          providers: { slow: { type: 'openai', base_url: sim.url, headers: { 'x-sim-ttft-ms': '100' } } },
          models: { 'slow-1': { provider: 'slow', pricing: { input: 1, output: 2 } } },
        },
      })
      key = await gateway.createKey()
    }, 30_000)
    afterAll(() => gateway?.stop())

    const send = (content: string, stream: boolean) =>
      fetch(`${gateway.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'slow-1',
          temperature: 0,
          max_tokens: 8,
          stream,
          messages: [{ role: 'user', content }],
        }),
      })

    test('50 concurrent identical requests: one upstream call, 50 complete answers', async () => {
      const content = `together ${crypto.randomUUID()}`
      const before = upstreamCalls()
      const streams = Array.from({ length: 50 }, (_, i) => i % 2 === 1)
      const responses = await Promise.all(streams.map((stream) => send(content, stream)))
      const bodies = await Promise.all(responses.map((response) => response.text()))
      expect(responses.map((response) => response.status)).toEqual(streams.map(() => 200))
      expect(upstreamCalls()).toBe(before + 1)
      const texts = bodies.map((body, i) => textOf(body, streams[i]!))
      expect(texts[0]!.length).toBeGreaterThan(0)
      expect(new Set(texts).size).toBe(1)
      const statuses = responses.map((response) => response.headers.get('x-cache'))
      expect(statuses.filter((status) => status === 'MISS')).toHaveLength(1)
      expect(statuses.filter((status) => status === 'HIT')).toHaveLength(49)
      const coalesced = responses.filter((response) => response.headers.get('x-cache-coalesced') === 'true')
      expect(coalesced.length).toBeGreaterThan(0)
      const ids = new Set(responses.map((response) => response.headers.get('x-request-id')))
      await eventually(() => gateway.settled.filter((exchange) => ids.has(exchange.id)).length === 50)
      const outcomes = gateway.settled
        .filter((exchange) => ids.has(exchange.id))
        .map((e) => e.settlement?.outcome)
      expect(outcomes.filter((outcome) => outcome === 'ok')).toHaveLength(1)
      expect(outcomes.filter((outcome) => outcome === 'cached')).toHaveLength(49)
    })

    test('when the shared call fails, the waiting requests each call upstream and succeed', async () => {
      const content = `failing ${crypto.randomUUID()}`
      sim.addFaults([{ status: 500, stall_ms: 150 }])
      const before = upstreamCalls()
      const started = performance.now()
      const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => send(content, i % 2 === 0)))
      await Promise.all(responses.map((response) => response.text()))
      expect(performance.now() - started).toBeLessThan(3_000)
      const statuses = responses.map((response) => response.status).sort()
      expect(statuses).toEqual([...Array(9).fill(200), 503])
      expect(upstreamCalls()).toBe(before + 10)
      expect(responses.filter((response) => response.headers.get('x-cache') === 'MISS')).toHaveLength(10)
      const ids = new Set(responses.map((response) => response.headers.get('x-request-id')))
      await eventually(() => gateway.settled.filter((exchange) => ids.has(exchange.id)).length === 10)
      const again = await send(content, false)
      expect(again.headers.get('x-cache')).toBe('HIT')
    })
  })
}

/** A Redis store under its own key prefix, connected before the gateway takes requests. */
async function connectedStore(prefix: string): Promise<RedisStore> {
  const store = new RedisStore({ url: await requireRedis(), keyPrefix: prefix })
  if (!(await store.waitUntilAvailable(5_000))) throw new Error('Redis did not answer')
  return store
}
