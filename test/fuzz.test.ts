/**
 * Property tests over a running gateway: generated bodies (valid and invalid, deep nesting,
 * long arrays, huge strings, wrong types, NUL and lone surrogates, `__proto__` and friends)
 * and raw bytes with any content type, on every JSON route. Every answer must be a
 * well-formed 2xx or 4xx in its surface's envelope, never a 5xx; afterwards the process
 * still serves, and no prototype was touched. Runs are bounded to keep the file fast.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import { freshPostgresDatabase, type ThrowawayPostgres } from './support/db'
import { bodyOf, checkAnswer, contentTypes, edgeString, field, jsonText } from './support/fuzz'
import { adminKey, type Gateway, startGateway } from './support/gateway'

/** Runs per property; FUZZ_RUNS=5000 bun test test/fuzz.test.ts hunts deeper. */
const runs = Number(process.env.FUZZ_RUNS) || 300
/** Generous for 300 runs (a run takes milliseconds), and grows with FUZZ_RUNS. */
const timeoutMs = 30_000 + runs * 20

/** Postgres rather than the embedded PGlite: it starts in milliseconds whatever else runs. */
let database: ThrowawayPostgres
let gateway: Gateway
let key: string
const prototypeKeys = Object.getOwnPropertyNames(Object.prototype)

beforeAll(async () => {
  database = await freshPostgresDatabase()
  gateway = await startGateway({ env: { DATABASE_URL: database.url } })
  key = await gateway.createKey('fuzz', 'enterprise')
})
afterAll(async () => {
  await gateway?.stop()
  await database?.drop()
})

const credentialFor = (path: string) => `Bearer ${path.startsWith('/admin') ? adminKey : key}`

function send(path: string, body: string | Uint8Array, contentType = 'application/json') {
  return fetch(`${gateway.url}${path}`, {
    method: 'POST',
    headers: { authorization: credentialFor(path), ...(contentType ? { 'content-type': contentType } : {}) },
    body,
  })
}

/** The first value most of the time, the others (the wrong kinds, unknown, empty) now and then. */
const quoted = ([usual, ...others]: string[]) =>
  fc.oneof(
    { weight: others.length * 3, arbitrary: fc.constant(JSON.stringify(usual)) },
    { weight: others.length, arbitrary: fc.constantFrom(...others.map((value) => JSON.stringify(value))) },
  )
const smallInt = fc.integer({ min: -1, max: 60 }).map(String)

const message = fc
  .record({
    role: fc.oneof(
      { weight: 12, arbitrary: fc.constantFrom('system', 'developer', 'user', 'assistant', 'tool') },
      { weight: 1, arbitrary: fc.constantFrom('robot', '', 'USER') },
    ),
    content: fc.oneof(
      edgeString,
      fc.constant(null),
      fc.array(
        fc.record({ type: fc.constantFrom('text', 'text', 'text', 'image_url', ''), text: edgeString }),
        {
          maxLength: 3,
        },
      ),
    ),
  })
  .map((value) => JSON.stringify(value))

const chatBody = bodyOf(
  field('model', quoted(['sim-1', 'sim-embed-1', 'gpt-9000', ''])),
  field(
    'messages',
    fc.array(message, { minLength: 1, maxLength: 4 }).map((items) => `[${items.join(',')}]`),
  ),
  field('stream', fc.constantFrom('true', 'false', 'null')),
  field('max_tokens', smallInt),
  field('temperature', fc.double({ min: 0, max: 2, noNaN: true }).map(String)),
  field('stream_options', fc.constantFrom('{"include_usage":true}', '{}', 'null')),
)

const embeddingsBody = bodyOf(
  field('model', quoted(['sim-embed-1', 'sim-1', 'nope'])),
  field(
    'input',
    fc.oneof(
      edgeString.map((value) => JSON.stringify(value)),
      fc.array(edgeString, { maxLength: 4 }).map((items) => JSON.stringify(items)),
      fc.array(fc.integer({ min: -1, max: 100_000 }), { maxLength: 8 }).map((items) => JSON.stringify(items)),
      fc
        .array(fc.array(fc.integer(), { maxLength: 4 }), { maxLength: 3 })
        .map((items) => JSON.stringify(items)),
    ),
  ),
  field('encoding_format', quoted(['float', 'base64', 'hex'])),
)

const keyBody = bodyOf(
  field(
    'user_id',
    fc.oneof(fc.stringMatching(/^[A-Za-z0-9._@+:-]{1,20}$/), edgeString).map((v) => JSON.stringify(v)),
  ),
  field(
    'name',
    edgeString.map((value) => JSON.stringify(value)),
  ),
  field('tier', quoted(['free', 'pro', 'enterprise', 'platinum', ''])),
)

function expectJson(check: (body: Record<string, unknown>) => void) {
  return (text: string, contentType: string) => {
    expect(contentType).toContain('application/json')
    check(JSON.parse(text) as Record<string, unknown>)
  }
}

const chatSuccess = (text: string, contentType: string) => {
  if (contentType.includes('text/event-stream')) expect(text).toContain('data: [DONE]')
  else expectJson((body) => expect(Array.isArray(body.choices)).toBe(true))(text, contentType)
}

const routes: Array<{
  path: string
  body: fc.Arbitrary<string>
  success: (text: string, type: string) => void
}> = [
  { path: '/v1/chat/completions', body: chatBody, success: chatSuccess },
  {
    path: '/v1/embeddings',
    body: embeddingsBody,
    success: expectJson((body) => expect(Array.isArray(body.data)).toBe(true)),
  },
  {
    path: '/admin/keys',
    body: keyBody,
    success: expectJson((body) => expect(body.key).toMatch(/^tg-/)),
  },
]

describe('generated bodies on every JSON route', () => {
  for (const { path, body, success } of routes) {
    test(
      `POST ${path}: structured bodies`,
      async () => {
        await fc.assert(
          fc.asyncProperty(body, async (text) => checkAnswer(await send(path, text), path, success)),
          { numRuns: runs },
        )
      },
      timeoutMs,
    )

    test(
      `POST ${path}: any JSON value, any content type, raw bytes`,
      async () => {
        const payload = fc.oneof(
          jsonText.map((text) => new TextEncoder().encode(text)),
          fc.uint8Array({ maxLength: 512 }),
          fc
            .string({ unit: 'binary', maxLength: 64 })
            .map((text) => new TextEncoder().encode(`{"a":"${text}`)),
        )
        await fc.assert(
          fc.asyncProperty(payload, contentTypes, async (bytes, type) =>
            checkAnswer(await send(path, bytes, type), path, success),
          ),
          { numRuns: Math.ceil(runs / 3) },
        )
      },
      timeoutMs,
    )
  }
})

describe('afterwards', () => {
  test('the process still serves and no prototype was touched', async () => {
    expect((await fetch(`${gateway.url}/health/live`)).status).toBe(200)
    expect(Object.getOwnPropertyNames(Object.prototype)).toEqual(prototypeKeys)
    expect(({} as Record<string, unknown>).a).toBeUndefined()
  })
})
