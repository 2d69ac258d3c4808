/**
 * Resilience through the real routes: the chat route's upstream calls go through breakers,
 * retries and fallbacks, the response headers say what happened, the Exchange is priced for
 * the model that served, and a stream that breaks off reaches the official SDK as an error.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test'
import OpenAI from 'openai'
import { priceFromUsdPerMillion } from '../plugins/exchange'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { eventually, type Gateway, startGateway } from './support/gateway'

let primary: SimServer
let backup: SimServer
let gateway: Gateway
let key: string

const retries = { max_retries: 2, backoff_base_ms: 1, backoff_cap_ms: 5, retry_after_cap_ms: 100 }

beforeAll(async () => {
  ;[primary, backup] = await Promise.all([startSimServer({ port: 0 }), startSimServer({ port: 0 })])
  gateway = await startGateway({
    file: {
      providers: {
        up: { type: 'openai', base_url: primary.url },
        alt: { type: 'openai', base_url: backup.url },
      },
      models: {
        main: { provider: 'up', pricing: { input: 1, output: 2 }, fallbacks: ['spare'] },
        spare: { provider: 'alt', pricing: { input: 3, output: 4 } },
      },
      breaker: { failure_threshold: 5, failure_rate: 0, retries },
    },
  })
  key = await gateway.createKey('resilience-user', 'enterprise')
})

afterAll(async () => {
  await gateway?.stop()
  await Promise.all([primary?.stop(), backup?.stop()])
})

beforeEach(async () => {
  primary.reset()
  backup.reset()
  await fetch(`${gateway.url}/admin/breakers/reset`, {
    method: 'POST',
    headers: { authorization: 'Bearer test-admin-key-0123456789' },
  })
})

const chat = (body: Record<string, unknown> = {}) =>
  fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'hello there' }], ...body }),
  })

describe('resilience through the chat route', () => {
  test('a 503 then a 200: the retry answers, X-Tollgate-Attempts: 2', async () => {
    primary.addFaults([{ status: 503 }])
    const response = await chat({ max_tokens: 4 })
    expect(response.status).toBe(200)
    expect(response.headers.get('x-tollgate-attempts')).toBe('2')
    expect(response.headers.get('x-tollgate-model')).toBe('main')
    expect(response.headers.get('x-tollgate-fallback')).toBe('0')
    expect(primary.stats.chat).toBe(2)
  })

  test('the route resolves the model once; the walk over its fallbacks takes that resolution', async () => {
    const { router } = gateway.runtime
    const resolve = router.resolve
    const resolved: string[] = []
    router.resolve = (name, kind) => {
      resolved.push(name)
      return resolve.call(router, name, kind)
    }
    try {
      primary.addFaults([{ status: 503, times: 3 }])
      const response = await chat({ stream: false })
      expect(response.status).toBe(200)
      expect(response.headers.get('x-tollgate-model')).toBe('spare')
      expect(resolved).toEqual(['main'])
    } finally {
      router.resolve = resolve
    }
  })

  test('a 400 from the upstream is never retried and never falls back', async () => {
    primary.addFaults([{ status: 400 }])
    const response = await chat()
    expect(response.status).toBe(400)
    expect(primary.stats.chat).toBe(1)
    expect(backup.stats.chat).toBe(0)
  })

  test('attempts exhausted on the primary: the fallback serves, priced as the fallback', async () => {
    primary.addFaults([{ status: 500, times: 3 }])
    const response = await chat({ max_tokens: 5 })
    expect(response.status).toBe(200)
    expect(response.headers.get('x-tollgate-model')).toBe('spare')
    expect(response.headers.get('x-tollgate-fallback')).toBe('1')
    expect(response.headers.get('x-tollgate-attempts')).toBe('4')
    const id = response.headers.get('x-request-id')!
    await eventually(() => gateway.settledFor(id).length === 1)
    const [exchange] = gateway.settledFor(id)
    expect(exchange!.servedModel).toBe('spare')
    expect(exchange!.price).toEqual(priceFromUsdPerMillion({ input: 3, output: 4 }))
    expect(exchange!.costNanoUsd).toBe(
      BigInt(exchange!.usage.promptTokens) * 3000n + BigInt(exchange!.usage.completionTokens) * 4000n,
    )
  })

  test('an open primary is skipped without an upstream call; every target down answers 503 with Retry-After', async () => {
    primary.addFaults([{ status: 500, times: 6 }])
    await chat()
    await chat()
    const callsWhenOpen = primary.stats.chat
    const skipped = await chat()
    expect(skipped.status).toBe(200)
    expect(skipped.headers.get('x-tollgate-model')).toBe('spare')
    expect(primary.stats.chat).toBe(callsWhenOpen)

    backup.addFaults([{ status: 500, times: 20 }])
    const down = await chat()
    expect(down.status).toBe(503)
    expect(Number(down.headers.get('retry-after'))).toBeGreaterThan(0)
    const body = (await down.json()) as { error: { code: string } }
    expect(body.error.code).toBe('upstream_unavailable')
  })

  test('a stream that breaks off mid-answer is an error the official SDK raises', async () => {
    primary.addFaults([{ fail_after_chunks: 5 }])
    const client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: key, maxRetries: 0 })
    // Opening the stream succeeds: the failure comes after chunks reached the client.
    const stream = await client.chat.completions.create({
      model: 'main',
      messages: [{ role: 'user', content: 'a long story' }],
      max_tokens: 20,
      stream: true,
    })
    let chunks = 0
    const failure = await (async () => {
      for await (const _chunk of stream) chunks++
    })().catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(OpenAI.APIError)
    expect(chunks).toBeGreaterThan(0)
    await eventually(() =>
      gateway.settled.some((exchange) => exchange.stream && exchange.settlement?.outcome === 'error'),
    )
  })
})
