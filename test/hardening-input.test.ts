/**
 * Input hardening on a running gateway: JSON depth and array-length limits, `__proto__`
 * keys, header size (431), non-JSON bodies on every JSON route (415) and malformed ids on
 * every admin route with one (400), all in the right envelope, with no stack trace in any
 * answer and no secret in any log line.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { setLogLevel } from '../src/log'
import { freshPostgresDatabase, type ThrowawayPostgres } from './support/db'
import { adminKey, type Gateway, startGateway } from './support/gateway'

/** Postgres rather than the embedded PGlite: it starts in milliseconds whatever else runs. */
let database: ThrowawayPostgres
let gateway: Gateway
let key: string
/** Every log line written while the tests ran. */
const logged: string[] = []
const restoreLogs: Array<() => void> = []

beforeAll(async () => {
  database = await freshPostgresDatabase()
  gateway = await startGateway({ env: { DATABASE_URL: database.url } })
  key = await gateway.createKey()
  setLogLevel('debug')
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write
    stream.write = ((chunk: string | Uint8Array) => {
      logged.push(String(chunk))
      return true
    }) as typeof stream.write
    restoreLogs.push(() => {
      stream.write = write
    })
  }
})
afterAll(async () => {
  for (const restore of restoreLogs) restore()
  setLogLevel('silent')
  await gateway?.stop()
  await database?.drop()
})

interface OpenAIError {
  error: { message: string; type: string; param: string | null; code: string | null }
}

const chat = (body: string, headers: Record<string, string> = {}) =>
  fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body,
  })

const chatBody = (extra: string) =>
  `{"model":"sim-1","messages":[{"role":"user","content":"hi"}],"extra":${extra}}`

async function expectError(response: Response, status: number, code: string, param?: string | null) {
  expect(response.status).toBe(status)
  const text = await response.text()
  expect(text).not.toMatch(/\bat .*\.(ts|js):\d+/)
  const { error } = JSON.parse(text) as OpenAIError
  expect(error.code).toBe(code)
  expect(error.type).toBe(status === 429 ? 'rate_limit_error' : 'invalid_request_error')
  if (param !== undefined) expect(error.param).toBe(param)
  return error
}

describe('JSON structure limits', () => {
  test('nesting up to 64 levels passes; deeper is a 400 naming the limit', async () => {
    // The body object is level 1 and "extra" sits in it: 63 more levels make 64 in all.
    const ok = await chat(chatBody(`${'['.repeat(63)}1${']'.repeat(63)}`))
    expect(ok.status).toBe(200)
    await ok.text()
    const error = await expectError(
      await chat(chatBody(`${'{"a":'.repeat(64)}1${'}'.repeat(64)}`)),
      400,
      'json_too_deep',
    )
    expect(error.message).toContain('64')
  })

  test('a body nested a hundred thousand levels is refused at once, without a stack overflow', async () => {
    const started = performance.now()
    await expectError(await chat(`${'['.repeat(100_000)}${']'.repeat(100_000)}`), 400, 'json_too_deep')
    expect(performance.now() - started).toBeLessThan(1_000)
  })

  test('arrays up to 10,000 elements pass; longer is a 400', async () => {
    const ok = await chat(chatBody(`[${Array(10_000).fill(0).join(',')}]`))
    expect(ok.status).toBe(200)
    await ok.text()
    const error = await expectError(
      await chat(chatBody(`[${Array(10_001).fill(0).join(',')}]`)),
      400,
      'json_array_too_long',
    )
    expect(error.message).toContain('10000')
  })

  test('brackets and commas inside strings do not count', async () => {
    const content = JSON.stringify(`${'[{,'.repeat(20_000)}\\"]`)
    const response = await chat(`{"model":"sim-1","messages":[{"role":"user","content":${content}}]}`)
    expect(response.status).toBe(200)
    await response.text()
  })
})

describe('prototype pollution', () => {
  test('a __proto__ key anywhere, spelled out or escaped, is a 400 naming where', async () => {
    await expectError(
      await chat(chatBody('{"__proto__":{"polluted":1}}')),
      400,
      'forbidden_key',
      'extra.__proto__',
    )
    await expectError(
      await chat('{"model":"sim-1","messages":[{"role":"user","content":"hi","\\u005f_proto__":{"x":1}}]}'),
      400,
      'forbidden_key',
      'messages.0.__proto__',
    )
    const admin = await fetch(`${gateway.url}/admin/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: '{"user_id":"u","name":"n","tier":"free","__proto__":{"tier":"enterprise"}}',
    })
    expect(admin.status).toBe(400)
    expect(admin.headers.get('content-type')).toContain('application/problem+json')
    expect(await admin.json()).toMatchObject({ code: 'forbidden_key', param: '__proto__' })
  })

  test('a toString key, which would make the object throw when printed, is a 400 too', async () => {
    await expectError(
      await chat('{"model":{"toString":null},"messages":[{"role":"user","content":"hi"}]}'),
      400,
      'forbidden_key',
      'model.toString',
    )
  })

  test('constructor and prototype keys are plain data and pollute nothing', async () => {
    const response = await chat(
      chatBody('{"constructor":{"prototype":{"polluted":1}},"prototype":{"polluted":1}}'),
    )
    expect(response.status).toBe(200)
    await response.text()
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    expect(Object.prototype).not.toHaveProperty('polluted')
  })
})

describe('header size', () => {
  test('headers past 8 KiB answer 431 in the envelope of the surface', async () => {
    const big = { 'x-filler': 'a'.repeat(9_000) }
    await expectError(await chat(chatBody('1'), big), 431, 'headers_too_large')
    const health = await fetch(`${gateway.url}/health/live`, { headers: big })
    expect(health.status).toBe(431)
    expect(health.headers.get('content-type')).toContain('application/problem+json')
    expect(await health.json()).toMatchObject({ status: 431, title: 'Request Header Fields Too Large' })
    const ok = await fetch(`${gateway.url}/health/live`, { headers: { 'x-filler': 'a'.repeat(7_000) } })
    expect(ok.status).toBe(200)
  })
})

interface OpenAPIDoc {
  paths: Record<string, Record<string, { requestBody?: unknown }>>
}

async function operations() {
  const doc = (await (await fetch(`${gateway.url}/swagger/json`)).json()) as OpenAPIDoc
  return Object.entries(doc.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, operation]) => ({ path, method: method.toUpperCase(), operation })),
  )
}

const credentialFor = (path: string) => `Bearer ${path.startsWith('/admin') ? adminKey : key}`

describe('every route', () => {
  test('every JSON route answers 415 to a body that is not JSON, in its envelope', async () => {
    const jsonRoutes = (await operations()).filter(({ operation }) => operation.requestBody !== undefined)
    expect(jsonRoutes.map(({ method, path }) => `${method} ${path}`)).toEqual(
      expect.arrayContaining(['POST /v1/chat/completions', 'POST /v1/embeddings', 'POST /admin/keys']),
    )
    for (const { method, path } of jsonRoutes) {
      const url = `${gateway.url}${path.replaceAll(/\{[^}]+\}/g, crypto.randomUUID())}`
      for (const type of [
        'text/plain',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
      ]) {
        const response = await fetch(url, {
          method,
          headers: { authorization: credentialFor(path), 'content-type': type },
          body: 'a=1',
        })
        expect(response.status, `${method} ${path} with ${type}`).toBe(415)
        const body = (await response.json()) as { code?: string; error?: { code: string } }
        expect(body.error?.code ?? body.code).toBe('unsupported_media_type')
      }
    }
  })

  test('every admin route with an {id} answers 400 naming `id` to an id that is not a UUID', async () => {
    const withIds = (await operations()).filter(
      ({ path }) => path.startsWith('/admin') && path.includes('{id}'),
    )
    expect(withIds.length).toBeGreaterThanOrEqual(2)
    const badIds = ['not-a-uuid', '1', `${crypto.randomUUID()}0`, "x'%20or%201=1--", '%00', '..%2F..%2Fetc']
    for (const { method, path } of withIds) {
      for (const id of badIds) {
        const response = await fetch(`${gateway.url}${path.replace('{id}', id)}`, {
          method,
          headers: { authorization: credentialFor(path), 'content-type': 'application/json' },
          body: method === 'GET' || method === 'DELETE' ? undefined : '{}',
        })
        const label = `${method} ${path} with id ${id}`
        expect([400, 404], label).toContain(response.status)
        expect(response.headers.get('content-type'), label).toContain('application/problem+json')
        if (response.status === 400) expect(await response.json(), label).toMatchObject({ param: 'id' })
        else await response.body?.cancel()
      }
    }
  })

  test('no answer above leaked a stack trace, and no log line a key', () => {
    const text = logged.join('')
    expect(text).not.toContain(key)
    expect(text).not.toContain(adminKey)
    expect(text).not.toContain('unhandled error')
  })
})
