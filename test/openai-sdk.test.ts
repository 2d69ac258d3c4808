/**
 * The official `openai` SDK against the gateway, with the simulator server behind it over
 * real HTTP (the `openai` provider), on real Redis and Postgres.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import OpenAI from 'openai'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { requirePostgres } from './support/db'
import { type Gateway, startGateway } from './support/gateway'
import { requireRedis } from './support/redis'

let sim: SimServer
let gateway: Gateway
let client: OpenAI

beforeAll(async () => {
  await requireRedis()
  await requirePostgres()
  sim = await startSimServer({ port: 0 })
  gateway = await startGateway({
    env: { REDIS_URL: 'redis://127.0.0.1:6379', DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test' },
    file: {
      providers: { upstream: { type: 'openai', base_url: sim.url } },
      models: {
        'remote-1': { provider: 'upstream', upstream_model: 'sim-remote', pricing: { input: 1, output: 2 } },
        'remote-embed': { provider: 'upstream', kind: 'embedding', pricing: { input: 0.1, output: 0 } },
      },
    },
  })
  client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: await gateway.createKey(), maxRetries: 0 })
})

afterAll(async () => {
  await gateway?.stop()
  await sim?.stop()
})

describe('official openai SDK through the gateway', () => {
  test('chat completion goes over HTTP to the simulator server', async () => {
    const before = sim.stats.chat
    const completion = await client.chat.completions.create({
      model: 'remote-1',
      messages: [{ role: 'user', content: 'Say something deterministic' }],
      max_tokens: 8,
    })
    expect(completion.object).toBe('chat.completion')
    expect(completion.model).toBe('remote-1')
    expect(completion.choices[0]?.message.content?.length).toBeGreaterThan(0)
    expect(completion.usage?.completion_tokens).toBe(8)
    expect(sim.stats.chat).toBe(before + 1)
  })

  test('streamed chat: text reassembles, usage chunk only when asked', async () => {
    const request = {
      model: 'remote-1',
      messages: [{ role: 'user' as const, content: 'Stream please' }],
      max_tokens: 6,
    }
    const plain = await client.chat.completions.create(request)
    let text = ''
    let usageChunks = 0
    for await (const chunk of await client.chat.completions.create({ ...request, stream: true })) {
      text += chunk.choices[0]?.delta.content ?? ''
      if (chunk.usage) usageChunks++
    }
    expect(text).toBe(plain.choices[0]!.message.content!)
    expect(usageChunks).toBe(0)

    let usage: OpenAI.CompletionUsage | undefined
    for await (const chunk of await client.chat.completions.create({
      ...request,
      stream: true,
      stream_options: { include_usage: true },
    })) {
      if (chunk.usage) usage = chunk.usage
    }
    expect(usage?.completion_tokens).toBe(6)
    expect(usage?.prompt_tokens).toBe(plain.usage!.prompt_tokens)
  })

  test('embeddings, float and base64', async () => {
    const floats = await client.embeddings.create({ model: 'remote-embed', input: ['alpha', 'beta'] })
    expect(floats.data).toHaveLength(2)
    expect(floats.data[1]!.index).toBe(1)
    const base64 = await client.embeddings.create({
      model: 'remote-embed',
      input: ['alpha', 'beta'],
      encoding_format: 'base64',
    })
    const decoded = new Float32Array(
      Buffer.from(base64.data[0]!.embedding as unknown as string, 'base64').buffer,
    )
    expect(Array.from(decoded)).toEqual(floats.data[0]!.embedding.map((x) => Math.fround(x)))
  })

  test('models list', async () => {
    const ids: string[] = []
    for await (const model of client.models.list()) ids.push(model.id)
    expect(ids).toEqual(expect.arrayContaining(['sim-1', 'remote-1', 'remote-embed']))
  })

  test('typed errors: 401, 404 model, 400 validation', async () => {
    const anonymous = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'tg-wrong', maxRetries: 0 })
    const unauthorized = await anonymous.models.list().catch((error) => error)
    expect(unauthorized).toBeInstanceOf(OpenAI.AuthenticationError)
    expect(unauthorized.code).toBe('invalid_api_key')

    const missing = await client.chat.completions
      .create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] })
      .catch((error) => error)
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError)
    expect(missing.code).toBe('model_not_found')
    expect(missing.param).toBe('model')

    const invalid = await client.chat.completions
      .create({ model: 'remote-1', messages: [{ role: 'user', content: 'hi' }], temperature: 7 })
      .catch((error) => error)
    expect(invalid).toBeInstanceOf(OpenAI.BadRequestError)
    expect(invalid.param).toBe('temperature')
  })
})
