/**
 * The Exchange settles exactly once for each of the four endings of a model request:
 * a JSON answer, a completed stream, an upstream failure mid-stream, and a client that
 * disconnects mid-stream (which must also abort the upstream call).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { eventually, type Gateway, startGateway } from './support/gateway'

let sim: SimServer
let gateway: Gateway
let key: string

const chat = (body: Record<string, unknown>, init: RequestInit = {}) =>
  fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'remote-1',
      messages: [{ role: 'user', content: 'hello there' }],
      ...body,
    }),
    ...init,
  })

const injectFaults = (faults: unknown[]) =>
  fetch(`${sim.url.replace(/\/v1$/, '')}/_sim/faults`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(faults),
  })

beforeAll(async () => {
  sim = await startSimServer({ port: 0 })
  gateway = await startGateway({
    file: {
      providers: { upstream: { type: 'openai', base_url: sim.url } },
      models: { 'remote-1': { provider: 'upstream', pricing: { input: 1, output: 2 } } },
    },
  })
  key = await gateway.createKey('exchange-user', 'pro')
})

afterAll(async () => {
  await gateway?.stop()
  await sim?.stop()
})

describe('Exchange settlement', () => {
  test('JSON answer settles once as ok with usage', async () => {
    const response = await chat({ max_tokens: 5 })
    expect(response.status).toBe(200)
    const id = response.headers.get('x-request-id')!
    const body = (await response.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }
    await eventually(() => gateway.settledFor(id).length === 1)
    const [exchange] = gateway.settledFor(id)
    expect(exchange!.settlement).toEqual({ outcome: 'ok', status: 200 })
    expect(exchange!.usage.completionTokens).toBe(5)
    expect(exchange!.usage.promptTokens).toBe(body.usage.prompt_tokens)
    expect(exchange!.principal?.userId).toBe('exchange-user')
    expect(exchange!.servedModel).toBe('remote-1')
    await Bun.sleep(20)
    expect(gateway.settledFor(id)).toHaveLength(1)
  })

  test('completed stream settles once as ok with the streamed usage', async () => {
    const response = await chat({ max_tokens: 7, stream: true })
    expect(response.headers.get('content-type')).toContain('text/event-stream')
    const id = response.headers.get('x-request-id')!
    const text = await response.text()
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true)
    expect(text).not.toContain('"usage":{')
    await eventually(() => gateway.settledFor(id).length === 1)
    const [exchange] = gateway.settledFor(id)
    expect(exchange!.settlement?.outcome).toBe('ok')
    expect(exchange!.usage.completionTokens).toBe(7)
    expect(exchange!.ttftMs).not.toBeNull()
  })

  test('upstream failure mid-stream: SSE error event, no [DONE], settled once as error', async () => {
    await injectFaults([{ fail_after_chunks: 3 }])
    const response = await chat({ max_tokens: 10, stream: true })
    expect(response.status).toBe(200)
    const id = response.headers.get('x-request-id')!
    const text = await response.text()
    expect(text).toContain('"error":{')
    expect(text).not.toContain('[DONE]')
    await eventually(() => gateway.settledFor(id).length === 1)
    const [exchange] = gateway.settledFor(id)
    expect(exchange!.settlement?.outcome).toBe('error')
    expect(exchange!.usage.completionTokens).toBeGreaterThan(0)
    expect(exchange!.usage.completionTokens).toBeLessThan(10)
  })

  test('client disconnect mid-stream: upstream aborted, settled once as cancelled', async () => {
    const abortedBefore = sim.stats.aborted
    await injectFaults([{ stall_after_chunks: { chunks: 2, ms: 10_000 } }])
    const controller = new AbortController()
    const response = await chat({ max_tokens: 20, stream: true }, { signal: controller.signal })
    const id = response.headers.get('x-request-id')!
    const reader = response.body!.getReader()
    await reader.read()
    controller.abort()
    await eventually(() => gateway.settledFor(id).length === 1, 3000)
    const [exchange] = gateway.settledFor(id)
    expect(exchange!.settlement?.outcome).toBe('cancelled')
    await eventually(() => sim.stats.aborted > abortedBefore, 3000)
    await Bun.sleep(50)
    expect(gateway.settledFor(id)).toHaveLength(1)
  })

  test('an upstream error before the first byte answers JSON (503, no target left) and settles once as error', async () => {
    await injectFaults([{ status: 500 }])
    const response = await chat({ stream: true })
    expect(response.status).toBe(503)
    const id = response.headers.get('x-request-id')!
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('upstream_unavailable')
    await eventually(() => gateway.settledFor(id).length === 1)
    expect(gateway.settledFor(id)[0]!.settlement?.outcome).toBe('error')
  })
})
