/**
 * Bad input gets a precise 4xx in the OpenAI envelope, changes no state (nothing settles,
 * the upstream is never called) and the server keeps serving.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { SimulatorProvider } from '../src/upstream/simulator'
import { type Gateway, startGateway } from './support/gateway'

let gateway: Gateway
let key: string

beforeAll(async () => {
  gateway = await startGateway({ providers: { sim: new SimulatorProvider({}) } })
  key = await gateway.createKey()
})
afterAll(() => gateway?.stop())

const post = (body: string | Uint8Array | ReadableStream<Uint8Array>, headers: Record<string, string> = {}) =>
  fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body,
  })

async function expectEnvelope(
  response: Response,
  status: number,
  code: string | null,
  param?: string | null,
) {
  expect(response.status).toBe(status)
  expect(response.headers.get('content-type')).toContain('application/json')
  const body = (await response.json()) as {
    error: { message: string; type: string; code: string | null; param: string | null }
  }
  expect(Object.keys(body)).toEqual(['error'])
  expect(typeof body.error.message).toBe('string')
  expect(body.error.message).not.toMatch(/at .*\.ts:\d+/)
  expect(body.error.code).toBe(code)
  if (param !== undefined) expect(body.error.param).toBe(param)
  return body.error
}

describe('bad input', () => {
  test('malformed JSON', async () => {
    await expectEnvelope(await post('{"model": "sim-1", "messages": ['), 400, 'invalid_json')
  })

  test('wrong types name the field', async () => {
    const error = await expectEnvelope(
      await post(JSON.stringify({ model: 42, messages: [{ role: 'user', content: 'hi' }] })),
      400,
      'invalid_value',
      'model',
    )
    expect(error.type).toBe('invalid_request_error')
    await expectEnvelope(
      await post(
        JSON.stringify({ model: 'sim-1', messages: [{ role: 'user', content: 'hi' }], max_tokens: 'ten' }),
      ),
      400,
      'invalid_value',
      'max_tokens',
    )
  })

  test('missing messages, empty messages, bad role', async () => {
    await expectEnvelope(await post(JSON.stringify({ model: 'sim-1' })), 400, 'invalid_value', 'messages')
    await expectEnvelope(
      await post(JSON.stringify({ model: 'sim-1', messages: [] })),
      400,
      'invalid_value',
      'messages',
    )
    await expectEnvelope(
      await post(JSON.stringify({ model: 'sim-1', messages: [{ role: 'robot', content: 'x' }] })),
      400,
      'invalid_value',
      'messages.0.role',
    )
  })

  test('2 MB body answers 413 with the configured limit', async () => {
    const huge = JSON.stringify({
      model: 'sim-1',
      messages: [{ role: 'user', content: 'x'.repeat(2 * 1024 * 1024) }],
    })
    const error = await expectEnvelope(await post(huge), 413, 'request_too_large')
    expect(error.message).toContain('1048576')
  })

  test('a chunked body past the limit is cut off while reading', async () => {
    const chunk = new TextEncoder().encode('x'.repeat(64 * 1024))
    let sent = 0
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 40) controller.enqueue(chunk)
        else controller.close()
      },
    })
    await expectEnvelope(await post(stream), 413, 'request_too_large')
  })

  test('unknown model', async () => {
    await expectEnvelope(
      await post(JSON.stringify({ model: 'gpt-9000', messages: [{ role: 'user', content: 'hi' }] })),
      404,
      'model_not_found',
      'model',
    )
  })

  test('non-UTF-8 bytes', async () => {
    const bytes = new Uint8Array([
      ...new TextEncoder().encode('{"model":"sim-1","messages":[{"role":"user","content":"'),
      0xff,
      0xfe,
      ...new TextEncoder().encode('"}]}'),
    ])
    await expectEnvelope(await post(bytes), 400, 'invalid_encoding')
  })

  test('non-JSON content type', async () => {
    await expectEnvelope(
      await post('model=sim-1', { 'content-type': 'application/x-www-form-urlencoded' }),
      415,
      'unsupported_media_type',
    )
  })

  test('unknown extra fields pass validation', async () => {
    const response = await post(
      JSON.stringify({
        model: 'sim-1',
        messages: [{ role: 'user', content: 'hi' }],
        some_future_field: { a: 1 },
      }),
    )
    expect(response.status).toBe(200)
  })

  test('bad input changes no state and the server keeps serving', async () => {
    const bad = [await post('not json'), await post(JSON.stringify({ model: 'sim-1', messages: [] }))]
    const ids = new Set(bad.map((response) => response.headers.get('x-request-id')))
    await Bun.sleep(20)
    expect(gateway.settled.filter((exchange) => ids.has(exchange.id))).toEqual([])
    const ok = await post(
      JSON.stringify({ model: 'sim-1', messages: [{ role: 'user', content: 'still there?' }] }),
    )
    expect(ok.status).toBe(200)
  })

  test('unauthenticated requests get 401 before anything else', async () => {
    const response = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'sim-1', messages: [{ role: 'user', content: 'hi' }] }),
    })
    await expectEnvelope(response, 401, 'invalid_api_key')
  })

  test('errors outside /v1 are problem+json', async () => {
    const response = await fetch(`${gateway.url}/admin/keys`, { headers: { authorization: 'Bearer nope' } })
    expect(response.status).toBe(401)
    expect(response.headers.get('content-type')).toContain('application/problem+json')
    const body = (await response.json()) as { status: number; title: string }
    expect(body.status).toBe(401)
    const missing = await fetch(`${gateway.url}/nowhere`)
    expect(missing.status).toBe(404)
    expect(missing.headers.get('content-type')).toContain('application/problem+json')
  })
})
