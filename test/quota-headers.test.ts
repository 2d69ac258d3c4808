/**
 * What a client sees of its quota: the IETF draft's `RateLimit-Policy` and `RateLimit`
 * fields, parsed here with a small Structured Field Values (RFC 8941) list parser so a
 * field that merely looks right does not pass; the older `X-RateLimit-*` names; an exact
 * `Retry-After` (GCRA); and 429s the official `openai` SDK turns into `RateLimitError`.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import OpenAI from 'openai'
import { requirePostgres } from './support/db'
import { type Gateway, startGateway } from './support/gateway'
import { burst, chat, countStatuses, manualClock, sharedRedisStore, uniqueUser } from './support/quota'

type BareItem = string | number | boolean | Uint8Array
interface Item {
  value: BareItem
  params: Record<string, BareItem>
}

/** RFC 8941 sf-list of items (no inner lists: the ratelimit fields use none). Throws on any deviation. */
function parseList(input: string): Item[] {
  let i = 0
  const fail = (what: string): never => {
    throw new SyntaxError(`${what} at ${i} in ${JSON.stringify(input)}`)
  }
  const skip = (chars: string) => {
    while (i < input.length && chars.includes(input[i]!)) i++
  }
  const key = () => {
    const match = /^[a-z*][a-z0-9_\-.*]*/.exec(input.slice(i)) ?? fail('expected a key')
    i += match[0].length
    return match[0]
  }
  const bareItem = (): BareItem => {
    const rest = input.slice(i)
    const c = input[i]
    if (c === '"') {
      let text = ''
      for (i++; i < input.length; i++) {
        const ch = input[i]!
        if (ch === '\\') {
          const next = input[++i]
          if (next !== '"' && next !== '\\') fail('bad escape')
          text += next
        } else if (ch === '"') {
          i++
          return text
        } else if (ch < ' ' || ch > '~') fail('bad string character')
        else text += ch
      }
      return fail('unterminated string')
    }
    if (c === '?') {
      if (rest[1] !== '0' && rest[1] !== '1') fail('bad boolean')
      i += 2
      return rest[1] === '1'
    }
    if (c === ':') {
      const end = input.indexOf(':', i + 1)
      if (end < 0) fail('unterminated byte sequence')
      const bytes = Uint8Array.fromBase64(input.slice(i + 1, end))
      i = end + 1
      return bytes
    }
    const number = /^-?\d{1,15}(\.\d{1,3})?/.exec(rest)
    if (number) {
      i += number[0].length
      return Number(number[0])
    }
    const token = /^[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*/.exec(rest) ?? fail('expected a bare item')
    i += token[0].length
    return token[0]
  }
  const items: Item[] = []
  skip(' ')
  while (i < input.length) {
    const value = bareItem()
    const params: Record<string, BareItem> = {}
    while (input[i] === ';') {
      i++
      skip(' ')
      const name = key()
      if (input[i] === '=') {
        i++
        params[name] = bareItem()
      } else params[name] = true
    }
    items.push({ value, params })
    skip(' \t')
    if (i === input.length) break
    if (input[i++] !== ',') fail('expected a comma')
    skip(' \t')
    if (i === input.length) fail('trailing comma')
  }
  return items
}

const clock = manualClock()
let gateway: Gateway

beforeAll(async () => {
  const store = await sharedRedisStore('quota-headers')
  gateway = await startGateway({
    env: { DATABASE_URL: await requirePostgres() },
    file: {
      tiers: {
        // free's windows without its concurrency cap of 2, so a burst meets the minute window.
        tiny: { requests_per_minute: 10, concurrent: null },
        budget: {
          requests_per_minute: null,
          requests_per_hour: null,
          requests_per_day: null,
          tokens_per_day: 100,
          cost_per_day_usd: null,
          concurrent: null,
        },
      },
      quota: { route_weights: { '/v1/embeddings': 4 } },
    },
    store,
    clock: clock.now,
  })
})

afterAll(async () => {
  await gateway?.stop()
})

describe('the structured-field parser used below', () => {
  test('reads items with parameters and refuses what RFC 8941 refuses', () => {
    expect(parseList('"a";q=10;w=60, tok;x;y=?0, :AQI=:;z=-1.5')).toEqual([
      { value: 'a', params: { q: 10, w: 60 } },
      { value: 'tok', params: { x: true, y: false } },
      { value: new Uint8Array([1, 2]), params: { z: -1.5 } },
    ])
    for (const bad of ['"a";q=10,', '"a";Q=1', '"a" "b"', '"unterminated', '"a";q=1.2345'])
      expect(() => parseList(bad)).toThrow(SyntaxError)
  })
})

describe('quota headers', () => {
  test('a model response carries RateLimit-Policy, RateLimit and X-RateLimit-* (JSON and SSE)', async () => {
    const key = await gateway.createKey(uniqueUser('hdr'), 'free')
    const response = await chat(gateway.url, key)
    expect(response.status).toBe(200)
    expect(parseList(response.headers.get('ratelimit-policy')!)).toEqual([
      { value: 'minute', params: { q: 10, w: 60 } },
      { value: 'hour', params: { q: 100, w: 3600 } },
      { value: 'day', params: { q: 500, w: 86400 } },
    ])
    // GCRA: one request of 10/min is paid back 6 s later, so the minute is whole again in 6 s.
    expect(parseList(response.headers.get('ratelimit')!)).toEqual([
      { value: 'minute', params: { r: 9, t: 6 } },
    ])
    expect(response.headers.get('x-ratelimit-limit')).toBe('10')
    expect(response.headers.get('x-ratelimit-remaining')).toBe('9')
    expect(response.headers.get('x-ratelimit-reset')).toBe('6')

    const stream = await chat(gateway.url, key, { stream: true })
    expect(stream.headers.get('content-type')).toContain('text/event-stream')
    expect(parseList(stream.headers.get('ratelimit')!)).toEqual([
      { value: 'minute', params: { r: 8, t: 12 } },
    ])
    await stream.text()
  })

  test('after a burst, every 429 says Retry-After 6 for 10/min, exact to the millisecond', async () => {
    const key = await gateway.createKey(uniqueUser('retry'), 'tiny')
    const results = await burst(15, () => chat(gateway.url, key))
    expect(countStatuses(results)).toEqual({ 200: 10, 429: 5 })
    for (const denied of results.filter((result) => result.status === 429)) {
      expect(denied.headers.get('retry-after')).toBe('6')
      expect(parseList(denied.headers.get('ratelimit')!)).toEqual([
        { value: 'minute', params: { r: 0, t: 60 } },
      ])
      expect(JSON.parse(denied.body)).toEqual({
        error: {
          message: 'Rate limit exceeded: 10 requests per minute for tier tiny.',
          type: 'rate_limit_error',
          param: null,
          code: 'rate_limit_exceeded',
        },
      })
    }
    clock.advance(5999)
    const early = await chat(gateway.url, key)
    expect(early.status).toBe(429)
    expect(early.headers.get('retry-after')).toBe('1')
    clock.advance(1)
    expect((await chat(gateway.url, key)).status).toBe(200)
    expect((await chat(gateway.url, key)).headers.get('retry-after')).toBe('6')
  })

  test('a route weight from config consumes that many units, as RateLimit shows', async () => {
    const key = await gateway.createKey(uniqueUser('weight'), 'tiny')
    const embed = () =>
      fetch(`${gateway.url}/v1/embeddings`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'sim-embed-1', input: 'weigh me' }),
      })
    const first = await embed()
    expect(first.status).toBe(200)
    expect(parseList(first.headers.get('ratelimit')!)).toEqual([{ value: 'minute', params: { r: 6, t: 24 } }])
    expect((await embed()).status).toBe(200)
    // 8 of 10 units used: a chat request (1 unit) fits, another embedding (4) does not for 12 s.
    const third = await embed()
    expect(third.status).toBe(429)
    expect(third.headers.get('retry-after')).toBe('12')
    expect((await chat(gateway.url, key)).status).toBe(200)
  })

  test('the openai SDK sees RateLimitError: rate_limit_exceeded for windows, insufficient_quota for budgets', async () => {
    const windowed = new OpenAI({
      baseURL: `${gateway.url}/v1`,
      apiKey: await gateway.createKey(uniqueUser('sdk'), 'free'),
      maxRetries: 0,
    })
    const request = { model: 'sim-1', messages: [{ role: 'user' as const, content: 'Hi' }], max_tokens: 4 }
    for (let i = 0; i < 10; i++) await windowed.chat.completions.create(request)
    const limited = await windowed.chat.completions.create(request).catch((error: unknown) => error)
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError)
    const rateError = limited as InstanceType<typeof OpenAI.RateLimitError>
    expect(rateError.status).toBe(429)
    expect(rateError.code).toBe('rate_limit_exceeded')
    expect(rateError.type).toBe('rate_limit_error')
    expect(rateError.headers.get('retry-after')).toBe('6')

    const budgeted = new OpenAI({
      baseURL: `${gateway.url}/v1`,
      apiKey: await gateway.createKey(uniqueUser('sdk-budget'), 'budget'),
      maxRetries: 0,
    })
    const overBudget = await budgeted.chat.completions
      .create({ ...request, max_tokens: 200 })
      .catch((error: unknown) => error)
    expect(overBudget).toBeInstanceOf(OpenAI.RateLimitError)
    const budgetError = overBudget as InstanceType<typeof OpenAI.RateLimitError>
    expect(budgetError.code).toBe('insufficient_quota')
    expect(budgetError.type).toBe('insufficient_quota')
    expect(budgetError.message).toContain('100 tokens per day for tier budget')
  })
})
