/**
 * fast-check arbitraries for hostile request bodies, and the check that an answer is a
 * well-formed 2xx or 4xx in the envelope of its surface. Bodies are generated as JSON
 * *text*, so keys like `__proto__` reach the wire as own keys (an object built in JS would
 * turn them into a prototype instead) and nesting, numbers and escapes are exactly as sent.
 */
import { expect } from 'bun:test'
import fc from 'fast-check'

/** Characters that break naive code: NUL, lone surrogate halves, BOM, bidi override, noncharacters, quotes. */
const edgeUnits = [
  '\u0000',
  '\ud800',
  '\udbff',
  '\udc00',
  '\udfff',
  '\ufeff',
  '\u202e',
  '\uffff',
  '\u2028',
  '😀',
  '"',
  '\\',
  '\n',
  'a',
  'é',
]

export const edgeString = fc.oneof(
  { weight: 15, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 15, arbitrary: fc.string({ unit: 'binary', maxLength: 24 }) },
  { weight: 15, arbitrary: fc.string({ unit: fc.constantFrom(...edgeUnits), maxLength: 24 }) },
  // Rarely, since a body has many strings: past the 1 MiB body limit, or just under it.
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 1_100_000 }).map((length) => 'x'.repeat(length)) },
)

const protoKeys = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '\\u005f_proto__']

/** A JSON object key as it appears in the text (already quoted; the escaped `__proto__` stays escaped). */
const keyText = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom(...protoKeys).map((key) => `"${key}"`) },
  {
    weight: 5,
    arbitrary: fc
      .constantFrom('model', 'messages', 'input', 'stream', 'user_id', 'tier', 'content', 'role')
      .map((key) => `"${key}"`),
  },
  { weight: 14, arbitrary: edgeString.map((key) => JSON.stringify(key)) },
)

const scalarText = fc.oneof(
  fc.constantFrom('null', 'true', 'false', '0', '-0', '1e400', '-1e-400', '12345678901234567890123', '0.1'),
  fc.double().map((value) => JSON.stringify(value)),
  fc.integer().map(String),
  edgeString.map((value) => JSON.stringify(value)),
)

const objectText = (entries: Array<[string, string]>) =>
  `{${entries.map(([key, value]) => `${key}:${value}`).join(',')}}`

/** Any JSON value, as text, nested a few levels. */
export const jsonText: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    scalarText,
    fc.array(tie('value'), { maxLength: 4 }).map((items) => `[${items.join(',')}]`),
    fc.array(fc.tuple(keyText, tie('value')), { maxLength: 4 }).map(objectText),
  ),
})).value

/** Structures past the limits: deep nesting (arrays, objects, both), long arrays. */
export const oversizedText = fc.oneof(
  fc.integer({ min: 1, max: 5_000 }).map((depth) => `${'['.repeat(depth)}${']'.repeat(depth)}`),
  fc.integer({ min: 1, max: 5_000 }).map((depth) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`),
  fc.integer({ min: 1, max: 2_000 }).map((depth) => `${'[{"a":'.repeat(depth)}1${'}]'.repeat(depth)}`),
  fc.integer({ min: 9_990, max: 10_010 }).map((length) => `[${Array(length).fill('0').join(',')}]`),
)

/**
 * A field of a request: mostly a plausible value, so that many requests get past
 * validation into the routes; sometimes any value, a structure past the limits, or nothing.
 */
export function field(name: string, plausible: fc.Arbitrary<string>): fc.Arbitrary<Array<[string, string]>> {
  return fc.oneof(
    { weight: 40, arbitrary: plausible.map((value): Array<[string, string]> => [[`"${name}"`, value]]) },
    { weight: 2, arbitrary: jsonText.map((value): Array<[string, string]> => [[`"${name}"`, value]]) },
    { weight: 1, arbitrary: oversizedText.map((value): Array<[string, string]> => [[`"${name}"`, value]]) },
    { weight: 1, arbitrary: fc.constant<Array<[string, string]>>([]) },
  )
}

/** An object body from its fields plus a few arbitrary extra keys, shuffled. */
export function bodyOf(...fields: Array<fc.Arbitrary<Array<[string, string]>>>): fc.Arbitrary<string> {
  const extraValue = fc.oneof({ weight: 20, arbitrary: jsonText }, { weight: 1, arbitrary: oversizedText })
  const extras = fc.array(fc.tuple(keyText, extraValue), { maxLength: 2 })
  return fc
    .tuple(fc.tuple(...fields), extras)
    .chain(([parts, extra]) => {
      const entries = [...parts.flat(), ...extra]
      return fc.shuffledSubarray(entries, { minLength: entries.length })
    })
    .map(objectText)
}

export const contentTypes = fc.constantFrom(
  'application/json',
  'application/json; charset=utf-8',
  'application/vnd.api+json',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/octet-stream',
  '',
  'application/json; charset=utf-16',
  'garbage/;;=',
)

interface Envelope {
  error?: { message: unknown; type: unknown; param: unknown; code: unknown }
  status?: unknown
  title?: unknown
  detail?: unknown
}

/**
 * Reads the answer whole and checks it: 2xx or 4xx, never 5xx; a 4xx in the OpenAI
 * envelope on /v1 and problem+json elsewhere, with no stack trace; a 2xx as `success` says.
 */
export async function checkAnswer(
  response: Response,
  path: string,
  success: (text: string, contentType: string) => void,
): Promise<void> {
  const text = await response.text()
  const contentType = response.headers.get('content-type') ?? ''
  const label = `${path} answered ${response.status} ${contentType}: ${text.slice(0, 300)}`
  expect(
    response.status >= 200 && response.status < 500 && (response.status < 300 || response.status >= 400),
    label,
  ).toBe(true)
  expect(text, label).not.toMatch(/\bat .*\.(ts|js):\d+/)
  if (response.status < 300) {
    success(text, contentType)
    return
  }
  // Errors echo field names, which clients choose: they must stay short whatever was sent.
  expect(text.length, label).toBeLessThan(4096)
  const body = JSON.parse(text) as Envelope
  if (path.startsWith('/v1/')) {
    expect(contentType, label).toContain('application/json')
    expect(Object.keys(body), label).toEqual(['error'])
    const { message, type, param, code } = body.error!
    expect(typeof message, label).toBe('string')
    expect(typeof type, label).toBe('string')
    expect(param === null || typeof param === 'string', label).toBe(true)
    expect(code === null || typeof code === 'string', label).toBe(true)
  } else {
    expect(contentType, label).toContain('application/problem+json')
    expect(body.status, label).toBe(response.status)
    expect(typeof body.title, label).toBe('string')
    expect(typeof body.detail, label).toBe('string')
  }
}
