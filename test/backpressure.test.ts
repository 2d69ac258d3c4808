/**
 * Backpressure end to end: a client that stops reading a long stream stops the gateway from
 * pulling its upstream, so neither the gateway nor the upstream runs ahead of the client by
 * more than the sockets' buffers; once the client reads again, it gets the whole answer.
 * A counting pass-through in front of the simulator server measures how far the upstream got.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import type { Server } from 'bun'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { adminKey, type Gateway, startGateway } from './support/gateway'

let sim: SimServer
let counter: Server<undefined>
let gateway: Gateway
let key: string
/** Bytes of answer bodies the upstream handed on to the gateway so far. */
let upstreamBytes = 0

/** Passes the simulator's answers through, counting each body's bytes as the gateway pulls them. */
function countingUpstream(target: string): Server<undefined> {
  return Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    async fetch(request) {
      const url = new URL(request.url)
      const answer = await fetch(`${target}${url.pathname.replace(/^\/v1/, '')}`, {
        method: request.method,
        headers: request.headers,
        body: request.body,
      })
      const reader = answer.body!.getReader()
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          const { done, value } = await reader.read()
          if (done) return controller.close()
          upstreamBytes += value.byteLength
          controller.enqueue(value)
        },
        cancel: (reason) => reader.cancel(reason),
      })
      return new Response(body, { status: answer.status, headers: answer.headers })
    },
  })
}

beforeAll(async () => {
  // 300k to 600k tokens, 65 MB or more: far more than every socket buffer on the way holds.
  sim = await startSimServer({ port: 0, maxTokens: 600_000 })
  counter = countingUpstream(sim.url)
  gateway = await startGateway({
    file: {
      providers: { upstream: { type: 'openai', base_url: `http://127.0.0.1:${counter.port}/v1` } },
      models: { 'remote-1': { provider: 'upstream', pricing: { input: 1, output: 2 } } },
    },
  })
  key = await gateway.createKey('backpressure', 'enterprise')
})

afterAll(async () => {
  await gateway?.stop()
  counter?.stop(true)
  await sim?.stop()
})

/** The relay's count of bytes it pulled from the upstream and handed to the response. */
async function relayedBytes(): Promise<number> {
  const response = await fetch(`${gateway.url}/admin/streams`, {
    headers: { authorization: `Bearer ${adminKey}` },
  })
  const { data } = (await response.json()) as { data: { bytes: number }[] }
  return data[0]?.bytes ?? 0
}

/** Polls until two readings `gapMs` apart agree: the stream has stopped moving. */
async function settledReading(gapMs: number, timeoutMs: number) {
  const deadline = performance.now() + timeoutMs
  let last = { relayed: await relayedBytes(), upstream: upstreamBytes }
  for (;;) {
    await Bun.sleep(gapMs)
    const now = { relayed: await relayedBytes(), upstream: upstreamBytes }
    if (now.relayed > 0 && now.relayed === last.relayed && now.upstream === last.upstream) return now
    if (performance.now() > deadline) throw new Error(`still moving: ${JSON.stringify(now)}`)
    last = now
  }
}

test('a client that reads nothing stalls the relay and the upstream; then it gets everything', async () => {
  const response = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'remote-1',
      stream: true,
      max_tokens: 600_000,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'go on' }],
    }),
  })
  expect(response.status).toBe(200)

  const stalled = await settledReading(300, 15_000)
  // Still stalled a second later: nothing runs ahead while the client does not read.
  await Bun.sleep(1000)
  expect(await relayedBytes()).toBe(stalled.relayed)
  expect(upstreamBytes).toBe(stalled.upstream)

  let contentFrames = 0
  let completionTokens = -1
  let rest = ''
  let last = ''
  let total = 0
  const decoder = new TextDecoder()
  for await (const bytes of response.body!) {
    total += bytes.byteLength
    const frames = (rest + decoder.decode(bytes, { stream: true })).split('\n\n')
    rest = frames.pop()!
    for (const frame of frames) {
      last = frame
      if (!frame.startsWith('data: {')) continue
      const chunk = JSON.parse(frame.slice(6)) as {
        choices: { delta: { content?: string } }[]
        usage?: { completion_tokens: number } | null
      }
      if (chunk.choices[0]?.delta.content) contentFrames++
      if (chunk.usage) completionTokens = chunk.usage.completion_tokens
    }
  }
  // Stalled well short of the end: the upstream ran ahead by the sockets' buffers, no more.
  expect(stalled.upstream).toBeLessThan(total * 0.75)
  expect(last).toBe('data: [DONE]')
  expect(completionTokens).toBe(contentFrames)
  expect(contentFrames).toBeGreaterThanOrEqual(300_000)
}, 60_000)
