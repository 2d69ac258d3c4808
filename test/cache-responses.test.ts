/**
 * The response cache end to end, on the memory store and on real Redis, with the simulator
 * server behind the gateway counting every upstream call: hits, streamed and JSON requests
 * sharing an entry (the replay read by the official `openai` SDK), namespaces, keyed fields,
 * Cache-Control, TTL, and what is never stored.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import OpenAI from 'openai'
import { RedisStore } from '../plugins/store'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { requirePostgres } from './support/db'
import { eventually, type Gateway, startGateway } from './support/gateway'
import { requireRedis, testKeyPrefix } from './support/redis'

interface Answer {
  status: number
  cache: string | null
  age: string | null
  id: string
  text: string
}

let sim: SimServer
beforeAll(async () => {
  sim = await startSimServer({ port: 0 })
})
afterAll(() => sim?.stop())

/** Starting a gateway runs migrations; on a busy machine that can take a while. */
const startupMs = 30_000
const upstreamCalls = () => sim.stats.chat + sim.stats.chatStream
const prompt = () => `question ${crypto.randomUUID()}`
const ask = (content: string, extra: Record<string, unknown> = {}) => ({
  messages: [{ role: 'user', content }],
  ...extra,
})

/** Sends a chat request, reads the whole answer and waits until its Exchange has settled. */
async function chat(
  gateway: Gateway,
  apiKey: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<Answer> {
  const response = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'remote-1', temperature: 0, max_tokens: 6, ...body }),
  })
  const text = await response.text()
  const id = response.headers.get('x-request-id')!
  await eventually(() => gateway.settled.some((exchange) => exchange.id === id))
  const cache = response.headers.get('x-cache')
  return { status: response.status, cache, age: response.headers.get('age'), id, text }
}

for (const backend of ['memory', 'redis'] as const) {
  describe(`response cache on ${backend}`, () => {
    let gateway: Gateway
    let key: string
    let otherKey: string
    let now = Date.UTC(2030, 0, 1)
    const send = (body: Record<string, unknown>, headers: Record<string, string> = {}, apiKey = key) =>
      chat(gateway, apiKey, body, headers)

    beforeAll(async () => {
      const prefix = testKeyPrefix(`cache-${crypto.randomUUID()}`)
      gateway = await startGateway({
        env: { DATABASE_URL: await requirePostgres() },
        ...(backend === 'redis' ? { store: await connectedStore(prefix) } : {}),
        clock: () => now,
        file: {
          providers: { upstream: { type: 'openai', base_url: sim.url } },
          models: {
            'remote-1': { provider: 'upstream', pricing: { input: 1, output: 2 } },
            'remote-2': { provider: 'upstream', pricing: { input: 1, output: 2 } },
            'shared-1': {
              provider: 'upstream',
              upstream_model: 'remote-1',
              pricing: { input: 1, output: 2 },
            },
            'brief-1': { provider: 'upstream', upstream_model: 'remote-1', pricing: { input: 1, output: 2 } },
          },
          cache: { models: { 'shared-1': { namespace: 'shared' }, 'brief-1': { ttl_seconds: 60 } } },
        },
      })
      key = await gateway.createKey()
      otherKey = await gateway.createKey()
    }, startupMs)
    afterAll(() => gateway?.stop())

    test('a second identical request is a HIT: the stored answer, upstream called once, saving priced', async () => {
      const body = ask(prompt())
      const before = upstreamCalls()
      const first = await send(body)
      expect(first.cache).toBe('MISS')
      expect(first.age).toBeNull()
      const second = await send(body)
      expect(second).toMatchObject({ status: 200, cache: 'HIT', age: '0', text: first.text })
      expect(upstreamCalls()).toBe(before + 1)
      const missed = gateway.settled.find((exchange) => exchange.id === first.id)!
      const hit = gateway.settled.find((exchange) => exchange.id === second.id)!
      expect(hit.settlement).toEqual({ outcome: 'cached', status: 200 })
      expect(hit.cacheStatus).toBe('HIT')
      expect(hit.costNanoUsd).toBe(0n)
      expect(hit.usage).toEqual({ promptTokens: 0, completionTokens: 0, cachedTokens: 0 })
      expect(hit.savedNanoUsd).toBe(missed.costNanoUsd)
      expect(hit.savedNanoUsd).toBeGreaterThan(0n)
    })

    test('stream and JSON share the entry; the replay reads as the same text in the openai SDK', async () => {
      const client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: key, maxRetries: 0 })
      const request = {
        model: 'remote-1',
        temperature: 0,
        max_tokens: 6,
        messages: [{ role: 'user' as const, content: prompt() }],
      }
      const before = upstreamCalls()
      const plain = await send(request)
      const completion = JSON.parse(plain.text) as OpenAI.ChatCompletion
      let text = ''
      let usage: OpenAI.CompletionUsage | undefined
      let finish: string | null = null
      let role: string | undefined
      const stream = client.chat.completions.create({
        ...request,
        stream: true,
        stream_options: { include_usage: true },
      })
      for await (const chunk of await stream) {
        role ??= chunk.choices[0]?.delta.role
        text += chunk.choices[0]?.delta.content ?? ''
        finish = chunk.choices[0]?.finish_reason ?? finish
        if (chunk.usage) usage = chunk.usage
      }
      expect(role).toBe('assistant')
      expect(text).toBe(completion.choices[0]!.message.content!)
      expect(finish).toBe(completion.choices[0]!.finish_reason)
      expect(usage).toEqual(completion.usage)
      expect(upstreamCalls()).toBe(before + 1)

      // The other way round: a streamed miss is assembled and stored; a JSON request hits it.
      const streamed = { ...request, messages: [{ role: 'user' as const, content: prompt() }] }
      let streamedText = ''
      for await (const chunk of await client.chat.completions.create({ ...streamed, stream: true }))
        streamedText += chunk.choices[0]?.delta.content ?? ''
      await eventually(() => upstreamCalls() === before + 2)
      await Bun.sleep(20)
      const json = await send({ messages: streamed.messages })
      expect(json.cache).toBe('HIT')
      const stored = JSON.parse(json.text) as OpenAI.ChatCompletion
      expect(stored.object).toBe('chat.completion')
      expect(stored.model).toBe('remote-1')
      expect(stored.choices[0]!.message.content).toBe(streamedText)
      expect(stored.usage?.completion_tokens).toBe(6)
      expect(upstreamCalls()).toBe(before + 2)
    })

    test('user namespaces never share an entry; a shared model does', async () => {
      const body = ask(prompt())
      await send(body)
      expect((await send(body, {}, otherKey)).cache).toBe('MISS')
      const shared = ask(prompt(), { model: 'shared-1' })
      expect((await send(shared)).cache).toBe('MISS')
      expect((await send(shared, {}, otherKey)).cache).toBe('HIT')
    })

    test('a change in any keyed field misses; stream, stream_options, user and key order do not', async () => {
      const base = ask(prompt())
      await send(base)
      const changes: Array<Record<string, unknown>> = [
        { model: 'remote-2' },
        { messages: [{ role: 'user', content: `${base.messages[0]!.content}?` }] },
        { messages: [{ role: 'system', content: 'Be brief.' }, ...base.messages] },
        { max_tokens: 5 },
        { seed: 1 },
        { stop: ['zz'] },
        { top_p: 0.5 },
        { n: 2 },
        { presence_penalty: 0.1 },
        { response_format: { type: 'text' } },
        { tools: [{ type: 'function', function: { name: 'noop', parameters: { type: 'object' } } }] },
        { tool_choice: 'none' },
        { logprobs: false },
        { metadata: { unknown: 'fields are keyed too' } },
      ]
      for (const change of changes)
        expect((await send({ ...base, ...change })).cache, JSON.stringify(change)).toBe('MISS')
      for (const same of [{ user: 'someone' }, { stream_options: null }, { stream: false }])
        expect((await send({ ...same, ...base })).cache, JSON.stringify(same)).toBe('HIT')
    })

    test('by default only deterministic requests (temperature 0 or a seed) are cached', async () => {
      const random = ask(prompt(), { temperature: 0.7 })
      expect((await send(random)).cache).toBe('BYPASS')
      expect((await send(random)).cache).toBe('BYPASS')
      const seeded = ask(prompt(), { temperature: 0.7, seed: 42 })
      await send(seeded)
      expect((await send(seeded)).cache).toBe('HIT')
    })

    test('Cache-Control: no-store neither reads nor writes, max-age bounds the age, no-cache refreshes', async () => {
      const body = ask(prompt())
      expect((await send(body, { 'cache-control': 'no-store' })).cache).toBe('BYPASS')
      expect((await send(body)).cache).toBe('MISS')
      expect((await send(body, { 'cache-control': 'no-store' })).cache).toBe('BYPASS')
      now += 30_000
      expect(await send(body)).toMatchObject({ cache: 'HIT', age: '30' })
      expect((await send(body, { 'cache-control': 'max-age=10' })).cache).toBe('MISS')
      // That miss stored a fresh entry.
      expect(await send(body, { 'cache-control': 'max-age=10' })).toMatchObject({ cache: 'HIT', age: '0' })
      now += 20_000
      const before = upstreamCalls()
      expect((await send(body, { 'cache-control': 'no-cache' })).cache).toBe('MISS')
      expect(upstreamCalls()).toBe(before + 1)
      expect(await send(body)).toMatchObject({ cache: 'HIT', age: '0' })
    })

    test('entries expire after their TTL', async () => {
      const body = ask(prompt(), { model: 'brief-1' })
      await send(body)
      now += 59_000
      expect((await send(body)).cache).toBe('HIT')
      now += 2_000
      expect((await send(body)).cache).toBe('MISS')
    })

    test('an upstream error, a stream cut short or a client that leaves stores nothing', async () => {
      const failing = ask(prompt())
      sim.addFaults([{ status: 500 }])
      expect((await send(failing)).status).toBe(503)
      expect((await send(failing)).cache).toBe('MISS')

      const cut = ask(prompt(), { stream: true, max_tokens: 10 })
      sim.addFaults([{ fail_after_chunks: 3 }])
      expect((await send(cut)).text).toContain('"error":{')
      expect((await send(cut)).cache).toBe('MISS')

      const left = ask(prompt(), { stream: true, max_tokens: 10 })
      sim.addFaults([{ stall_after_chunks: { chunks: 2, ms: 5_000 } }])
      const controller = new AbortController()
      const response = await fetch(`${gateway.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'remote-1', temperature: 0, ...left }),
        signal: controller.signal,
      })
      await response.body!.getReader().read()
      controller.abort()
      const id = response.headers.get('x-request-id')!
      await eventually(() => gateway.settled.some((exchange) => exchange.id === id), 3000)
      expect(gateway.settled.find((exchange) => exchange.id === id)!.settlement?.outcome).toBe('cancelled')
      expect((await send(left)).cache).toBe('MISS')
    })
  })
}

describe('entry size bound', () => {
  test('an answer larger than max_entry_bytes is served but not stored', async () => {
    const gateway = await startGateway({
      env: { DATABASE_URL: await requirePostgres() },
      file: {
        providers: { upstream: { type: 'openai', base_url: sim.url } },
        models: { 'remote-1': { provider: 'upstream', pricing: { input: 1, output: 2 } } },
        cache: { max_entry_bytes: 200 },
      },
    })
    try {
      const key = await gateway.createKey()
      const before = upstreamCalls()
      const body = ask('a long enough answer', { max_tokens: 40 })
      for (const stream of [false, true, false]) {
        const answer = await chat(gateway, key, { ...body, stream })
        expect(answer).toMatchObject({ status: 200, cache: 'MISS' })
      }
      expect(upstreamCalls()).toBe(before + 3)
    } finally {
      await gateway.stop()
    }
  })
})

/** A Redis store under its own key prefix, connected before the gateway takes requests. */
async function connectedStore(prefix: string): Promise<RedisStore> {
  const store = new RedisStore({ url: await requireRedis(), keyPrefix: prefix })
  if (!(await store.waitUntilAvailable(5_000))) throw new Error('Redis did not answer')
  return store
}
