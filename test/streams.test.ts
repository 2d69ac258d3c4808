/**
 * Stream control against a real gateway with the simulator server behind it over HTTP: the
 * admin API lists active streams per user and cancels one (the client gets a `cancelled`
 * error event, the upstream is aborted, the Exchange settles once as cancelled and billed
 * for what streamed), and comment heartbeats flow while the upstream is silent without
 * disturbing clients, the official SDK included.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import OpenAI from 'openai'
import type { StreamEntry } from '../plugins/streams'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { adminKey, eventually, type Gateway, sseReader, startGateway } from './support/gateway'

let sim: SimServer
let gateway: Gateway
let aliceKey: string
let bobKey: string

const stall = (ms: number, times = 1) => sim.addFaults([{ stall_after_chunks: { chunks: 2, ms }, times }])

const admin = (path: string, method = 'GET') =>
  fetch(`${gateway.url}/admin${path}`, { method, headers: { authorization: `Bearer ${adminKey}` } })

const listStreams = async () => ((await (await admin('/streams')).json()) as { data: StreamEntry[] }).data

/** A streaming chat request whose SSE text is read as it arrives. */
async function openStream(key: string, content = 'tell me a long story') {
  const response = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'remote-1',
      stream: true,
      max_tokens: 20,
      messages: [{ role: 'user', content }],
    }),
  })
  expect(response.status).toBe(200)
  return sseReader(response)
}

const dataFrames = (text: string) =>
  text
    .split('\n\n')
    .filter((frame) => frame.startsWith('data: '))
    .map((frame) => frame.slice(6))

beforeAll(async () => {
  sim = await startSimServer({ port: 0 })
  gateway = await startGateway({
    file: {
      providers: { upstream: { type: 'openai', base_url: sim.url } },
      models: { 'remote-1': { provider: 'upstream', pricing: { input: 1, output: 2 } } },
      streams: { heartbeat_ms: 50 },
    },
  })
  aliceKey = await gateway.createKey('streams-alice')
  bobKey = await gateway.createKey('streams-bob')
})

afterAll(async () => {
  await gateway?.stop()
  await sim?.stop()
})

describe('GET /admin/streams', () => {
  test('lists each active stream with its own user, key and model', async () => {
    stall(5_000, 2)
    const alice = await openStream(aliceKey)
    const bob = await openStream(bobKey)
    await alice.readUntil((text) => dataFrames(text).length >= 2)
    await bob.readUntil((text) => dataFrames(text).length >= 2)
    const listed = await listStreams()
    const a = listed.find((entry) => entry.id === alice.id)
    const b = listed.find((entry) => entry.id === bob.id)
    expect(a).toMatchObject({ user_id: 'streams-alice', model: 'remote-1' })
    expect(b).toMatchObject({ user_id: 'streams-bob', model: 'remote-1' })
    expect(a!.key_id).not.toBe(b!.key_id)
    expect(a!.tokens).toBe(2)
    expect(a!.bytes).toBeGreaterThan(0)
    expect(Number.isNaN(Date.parse(a!.started_at))).toBe(false)
    await Promise.all([alice.cancel(), bob.cancel()])
    await eventually(
      () => gateway.settledFor(alice.id).length === 1 && gateway.settledFor(bob.id).length === 1,
      3000,
    )
    expect((await listStreams()).map((entry) => entry.id)).not.toContain(alice.id)
  })
})

describe('POST /admin/streams/:id/cancel', () => {
  test('ends the client stream with a cancelled event, aborts the upstream, settles once billed', async () => {
    const abortedBefore = sim.stats.aborted
    stall(5_000)
    const stream = await openStream(aliceKey)
    await stream.readUntil((text) => dataFrames(text).length >= 2)
    const started = performance.now()
    const response = await admin(`/streams/${stream.id}/cancel`, 'POST')
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ id: stream.id, cancelled: true })

    const text = await stream.readToEnd()
    expect(performance.now() - started).toBeLessThan(2_000)
    const frames = dataFrames(text)
    expect(frames).not.toContain('[DONE]')
    expect(JSON.parse(frames.at(-1)!)).toEqual({
      error: { message: expect.any(String), type: 'server_error', param: null, code: 'cancelled' },
    })
    const contentTokens = frames
      .slice(0, -1)
      .filter(
        (frame) =>
          (JSON.parse(frame) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content,
      ).length

    await eventually(() => sim.stats.aborted === abortedBefore + 1, 3000)
    await eventually(() => gateway.settledFor(stream.id).length === 1, 3000)
    const [exchange] = gateway.settledFor(stream.id)
    expect(exchange!.settlement).toMatchObject({ outcome: 'cancelled', errorCode: 'cancelled' })
    expect(exchange!.usage.completionTokens).toBe(contentTokens)
    // The upstream's usage never came: the prompt is charged at the admission estimate.
    expect(exchange!.usage.promptTokens).toBeGreaterThan(0)
    expect(exchange!.usage.promptTokens).toBe(exchange!.estimatedTokens)
    expect(exchange!.costNanoUsd).toBeGreaterThan(0n)
    await Bun.sleep(50)
    expect(gateway.settledFor(stream.id)).toHaveLength(1)
    expect((await listStreams()).map((entry) => entry.id)).not.toContain(stream.id)
    expect((await admin(`/streams/${stream.id}/cancel`, 'POST')).status).toBe(404)
  })

  test('an unknown id answers 404 problem+json', async () => {
    const response = await admin('/streams/no-such-stream/cancel', 'POST')
    expect(response.status).toBe(404)
    expect(response.headers.get('content-type')).toContain('application/problem+json')
    expect(await response.json()).toMatchObject({ status: 404, code: 'stream_not_found' })
  })

  test('needs the admin key', async () => {
    const response = await fetch(`${gateway.url}/admin/streams`, {
      headers: { authorization: `Bearer ${aliceKey}` },
    })
    expect(response.status).toBe(401)
  })
})

describe('a client that leaves mid-stream', () => {
  test('settles once as cancelled, charged the prompt estimate and the content relayed', async () => {
    stall(5_000)
    const stream = await openStream(bobKey, 'a client that will not wait for the end of this story')
    const text = await stream.readUntil((sofar) => dataFrames(sofar).length >= 2)
    const contentTokens = dataFrames(text).filter(
      (frame) =>
        (JSON.parse(frame) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content,
    ).length
    await stream.cancel()
    await eventually(() => gateway.settledFor(stream.id).length === 1, 3000)
    const [exchange] = gateway.settledFor(stream.id)
    expect(exchange!.settlement).toMatchObject({ outcome: 'cancelled', errorCode: 'client_disconnected' })
    expect(exchange!.usage.completionTokens).toBe(contentTokens)
    expect(exchange!.usage.promptTokens).toBeGreaterThan(0)
    expect(exchange!.usage.promptTokens).toBe(exchange!.estimatedTokens)
    expect(exchange!.costNanoUsd).toBeGreaterThan(0n)
  })
})

describe('heartbeats', () => {
  test('comment lines flow while the upstream is silent, and the stream still completes', async () => {
    stall(400)
    const stream = await openStream(aliceKey, 'heartbeat please')
    const text = await stream.readToEnd()
    expect(text).toContain(': ping\n\n')
    expect(text.split(': ping\n\n').length - 1).toBeGreaterThanOrEqual(2)
    expect(dataFrames(text).at(-1)).toBe('[DONE]')
    await eventually(() => gateway.settledFor(stream.id).length === 1)
    expect(gateway.settledFor(stream.id)[0]!.settlement?.outcome).toBe('ok')
  })

  test('the official openai SDK ignores them and reassembles the text', async () => {
    const client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: bobKey, maxRetries: 0 })
    const request = {
      model: 'remote-1',
      messages: [{ role: 'user' as const, content: 'an SDK through a silence' }],
      max_tokens: 12,
    }
    const plain = await client.chat.completions.create(request)
    stall(300)
    let text = ''
    for await (const chunk of await client.chat.completions.create({ ...request, stream: true }))
      text += chunk.choices[0]?.delta.content ?? ''
    expect(text).toBe(plain.choices[0]!.message.content!)
  })
})
