/**
 * Structural limits on JSON request bodies: nesting depth, array length, and keys that
 * could reach an object's prototype or break its conversion to a string. JSON.parse itself copes with deep input, but the code
 * after it may not (recursive validation, `JSON.stringify` of the upstream request), and a
 * deeply nested megabyte costs a hundred times the parse time of a flat one. So depth and
 * array length are checked by a scan of the text *before* parsing, which stops at the first
 * violation; neither the scan nor the key walk recurses, whatever the input.
 */
import { ApiError, clipParam } from './errors'

export interface JsonLimits {
  /** Deepest nesting of objects and arrays accepted; the top-level value is depth 1. */
  maxDepth: number
  /** Most elements in any one array. */
  maxArrayLength: number
}

const quote = 0x22
const backslash = 0x5c
const openBracket = 0x5b
const closeBracket = 0x5d
const openBrace = 0x7b
const closeBrace = 0x7d
const comma = 0x2c
/** Marks an object on the scan's stack; arrays carry their element count instead. */
const objectMark = -1

function tooDeep(maxDepth: number): ApiError {
  return new ApiError({
    status: 400,
    message: `Request body nests objects and arrays deeper than the limit of ${maxDepth} levels.`,
    code: 'json_too_deep',
  })
}

function tooLong(maxArrayLength: number): ApiError {
  return new ApiError({
    status: 400,
    message: `Request body has an array with more than the limit of ${maxArrayLength} elements.`,
    code: 'json_array_too_long',
  })
}

/** Index of the quote that closes the string opened at `start`, or -1 when it never closes. */
function stringEnd(text: string, start: number): number {
  let at = start + 1
  for (;;) {
    at = text.indexOf('"', at)
    if (at < 0) return -1
    let backslashes = 0
    while (text.charCodeAt(at - 1 - backslashes) === backslash) backslashes++
    if (backslashes % 2 === 0) return at
    at++
  }
}

/**
 * Throws the 400 for the first nesting or array-length violation in a JSON text. It reads
 * structure only (strings are skipped whole, with `indexOf`); malformed JSON is left for
 * JSON.parse to describe. An array's length is counted as its commas plus one, which is
 * exact for valid JSON.
 */
export function checkJsonStructure(text: string, { maxDepth, maxArrayLength }: JsonLimits): void {
  const stack: number[] = []
  for (let at = 0; at < text.length; at++) {
    const char = text.charCodeAt(at)
    if (char === quote) {
      const end = stringEnd(text, at)
      if (end < 0) return
      at = end
    } else if (char === openBracket || char === openBrace) {
      if (stack.length >= maxDepth) throw tooDeep(maxDepth)
      stack.push(char === openBracket ? 1 : objectMark)
    } else if (char === closeBracket || char === closeBrace) {
      stack.pop()
    } else if (char === comma && stack.length > 0) {
      const top = stack.length - 1
      if (stack[top] !== objectMark && ++stack[top]! > maxArrayLength) throw tooLong(maxArrayLength)
    }
  }
}

/**
 * Keys refused anywhere in a body. JSON.parse makes `__proto__` an ordinary own property,
 * harmless by itself, but one `Object.assign` or hand-written merge later it replaces an
 * object's prototype. An own `toString` that is not a function makes the object throw on
 * any conversion to a string (`${value}`), which Elysia's own validation messages do: a
 * body with one where a string belongs would end in a 500. Neither has a meaning in any
 * request, so the body is refused rather than trusted to every piece of code that copies
 * or prints it. (`constructor`, `prototype` and the other Object.prototype names are plain
 * data after JSON.parse and reach a prototype only through a recursive merge along a path,
 * which nothing in the gateway does; JSON schemas in `tools` may use them, so they pass.)
 */
export const forbiddenKeys: ReadonlySet<string> = new Set(['__proto__', 'toString'])

/** The dotted path of the first forbidden key in a parsed JSON value, or null. */
export function findForbiddenKey(value: unknown): string | null {
  const pending: Array<{ value: unknown; path: string }> = [{ value, path: '' }]
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const current = next.value
    if (current === null || typeof current !== 'object') continue
    const prefix = next.path === '' ? '' : `${next.path}.`
    if (Array.isArray(current)) {
      for (let index = 0; index < current.length; index++) {
        const item: unknown = current[index]
        if (item !== null && typeof item === 'object')
          pending.push({ value: item, path: `${prefix}${index}` })
      }
      continue
    }
    for (const key of Object.keys(current)) {
      if (forbiddenKeys.has(key)) return `${prefix}${key}`
      const item: unknown = (current as Record<string, unknown>)[key]
      if (item !== null && typeof item === 'object') pending.push({ value: item, path: `${prefix}${key}` })
    }
  }
  return null
}

/** Parses a JSON text within the limits, or throws the 400 that says which one it broke. */
export function parseLimitedJson(text: string, limits: JsonLimits): unknown {
  checkJsonStructure(text, limits)
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new ApiError({
      status: 400,
      message: `Request body is not valid JSON: ${(error as Error).message}`,
      code: 'invalid_json',
    })
  }
  // A forbidden key is either spelled out or escaped with \u, so most bodies skip the walk.
  if (text.includes('__proto__') || text.includes('toString') || text.includes('\\u')) {
    const path = findForbiddenKey(value)
    if (path !== null)
      throw new ApiError({
        status: 400,
        message: `Request body has a key that is not allowed anywhere ('__proto__' or 'toString') at '${clipParam(path)}'.`,
        code: 'forbidden_key',
        param: clipParam(path),
      })
  }
  return value
}
