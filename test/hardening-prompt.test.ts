/**
 * Per-tier prompt limits: the config's tiers carry `max_messages` and `max_prompt_chars`,
 * the exchange plugin applies them through `checkPrompt(body, principal)` (as the model
 * routes call it), keys' overrides win over their tier, and a request over a limit gets a
 * 400 naming `messages` or `input`. Also: the config's request limits and their defaults.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Elysia, t } from 'elysia'
import { ApiKeys, auth, createApiKey } from '../plugins/auth'
import { checkPromptLimits, exchange, SettlementHub } from '../plugins/exchange'
import { buildConfig } from '../src/config'
import { openTestDatabase, type TestDatabase } from './support/db'

let testDb: TestDatabase
let app: ReturnType<typeof buildApp>
const tokens: Record<string, string> = {}

function buildApp(keys: ApiKeys) {
  const config = buildConfig({}, { tiers: { small: { max_messages: 2, max_prompt_chars: 10 } } })
  return new Elysia()
    .use(exchange({ hub: new SettlementHub(), promptLimits: config.tiers }))
    .use(auth({ keys }))
    .post(
      '/v1/chat/completions',
      ({ body, principal, checkPrompt }) => {
        checkPrompt(body, principal)
        return { ok: true }
      },
      { apiKey: true, body: t.Object({ messages: t.Array(t.Object({ content: t.Unknown() })) }) },
    )
    .post(
      '/v1/embeddings',
      ({ body, principal, checkPrompt }) => {
        checkPrompt(body, principal)
        return { ok: true }
      },
      { apiKey: true, body: t.Object({ input: t.Unknown() }) },
    )
}

beforeAll(async () => {
  testDb = await openTestDatabase('postgres')
  const { db } = testDb.database
  app = buildApp(new ApiKeys({ db }))
  for (const [name, tier, overrides] of [
    ['small', 'small', {}],
    ['override', 'small', { max_messages: null, max_prompt_chars: 1000 }],
    ['enterprise', 'enterprise', {}],
  ] as const) {
    tokens[name] = (await createApiKey(db, { userId: name, name, tier, overrides })).key
  }
})
afterAll(() => testDb?.cleanup())

function post(path: string, who: string, body: unknown) {
  return app.handle(
    new Request(`http://gateway${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens[who]}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    }),
  )
}

const messages = (...contents: unknown[]) => ({ messages: contents.map((content) => ({ content })) })

async function expectRefused(response: Response, code: string, param: string) {
  expect(response.status).toBe(400)
  const { error } = (await response.json()) as {
    error: { type: string; code: string; param: string; message: string }
  }
  expect(error).toMatchObject({ type: 'invalid_request_error', code, param })
  return error.message
}

describe('prompt limits per tier', () => {
  test('message count: at the limit passes, past it is a 400 naming messages', async () => {
    expect((await post('/v1/chat/completions', 'small', messages('a', 'b'))).status).toBe(200)
    const message = await expectRefused(
      await post('/v1/chat/completions', 'small', messages('a', 'b', 'c')),
      'too_many_messages',
      'messages',
    )
    expect(message).toContain('at most 2')
  })

  test('prompt characters count string content and text parts', async () => {
    expect((await post('/v1/chat/completions', 'small', messages('12345', [{ text: '12345' }]))).status).toBe(
      200,
    )
    await expectRefused(
      await post('/v1/chat/completions', 'small', messages('12345', [{ type: 'text', text: '123456' }])),
      'prompt_too_long',
      'messages',
    )
  })

  test('embeddings input: strings by characters, token ids as 4 each; param input', async () => {
    expect((await post('/v1/embeddings', 'small', { input: ['12345', '12345'] })).status).toBe(200)
    await expectRefused(
      await post('/v1/embeddings', 'small', { input: '12345678901' }),
      'prompt_too_long',
      'input',
    )
    await expectRefused(
      await post('/v1/embeddings', 'small', { input: [1, 2, 3] }),
      'prompt_too_long',
      'input',
    )
  })

  test("a key's overrides win over its tier; null lifts a limit", async () => {
    const many = messages(...Array(50).fill('x'))
    expect((await post('/v1/chat/completions', 'override', many)).status).toBe(200)
    await expectRefused(
      await post('/v1/chat/completions', 'override', messages('x'.repeat(1001))),
      'prompt_too_long',
      'messages',
    )
  })

  test('enterprise is unlimited by default', async () => {
    const huge = messages(...Array(2_000).fill('x'.repeat(100)))
    expect((await post('/v1/chat/completions', 'enterprise', huge)).status).toBe(200)
  })

  test('checkPromptLimits alone: null is unlimited, odd content counts nothing', () => {
    const unlimited = { max_messages: null, max_prompt_chars: null }
    expect(() => checkPromptLimits(messages(...Array(10_000).fill('x')), unlimited)).not.toThrow()
    expect(() =>
      checkPromptLimits(messages(null, 42, [null, { text: 7 }], { text: 'x'.repeat(99) }), {
        max_messages: 4,
        max_prompt_chars: 1,
      }),
    ).not.toThrow()
  })
})

describe('config', () => {
  test('defaults: request limits, prompt limits per built-in tier, the auth failure limit', () => {
    const config = buildConfig({})
    expect(config.limits).toEqual({ maxJsonDepth: 64, maxJsonArrayLength: 10_000, maxHeaderBytes: 8192 })
    expect(config.auth).toMatchObject({ failuresPerMinute: 20, trustedProxyHops: 0 })
    expect(config.tiers.free).toMatchObject({ max_messages: 100, max_prompt_chars: 100_000 })
    expect(config.tiers.enterprise).toMatchObject({ max_messages: null, max_prompt_chars: null })
  })

  test('the file sets them; a new tier starts from free; bad values name the field', () => {
    const config = buildConfig(
      {},
      {
        limits: { max_json_depth: 10, max_json_array_length: 50, max_header_bytes: 4096 },
        auth: { failures_per_minute: null, trusted_proxy_hops: 2 },
        tiers: { team: { max_messages: 7 } },
      },
    )
    expect(config.limits).toEqual({ maxJsonDepth: 10, maxJsonArrayLength: 50, maxHeaderBytes: 4096 })
    expect(config.auth).toMatchObject({ failuresPerMinute: null, trustedProxyHops: 2 })
    expect(config.tiers.team).toMatchObject({ max_messages: 7, max_prompt_chars: 100_000 })
    expect(() => buildConfig({}, { limits: { max_json_depth: 0 } })).toThrow(/limits\.max_json_depth/)
    expect(() => buildConfig({}, { tiers: { free: { max_messages: 0 } } })).toThrow(
      /tiers\.free\.max_messages/,
    )
  })
})
