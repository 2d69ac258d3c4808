/**
 * JSON body reading with the limits a public endpoint needs: a byte cap enforced while
 * reading (a chunked body cannot sneak past Content-Length), strict UTF-8, a JSON content
 * type, and structural limits (depth, array length, no `__proto__` keys; see json-limits.ts).
 * Each failure is a precise ApiError, raised before any state changes.
 */
import { ApiError } from './errors'
import { type JsonLimits, parseLimitedJson } from './json-limits'

/** Deep enough for any real request (tool schemas included), shallow enough for any code. */
export const defaultJsonLimits: JsonLimits = { maxDepth: 64, maxArrayLength: 10_000 }

const utf8 = new TextDecoder('utf-8', { fatal: true })

export function tooLarge(limitBytes: number): ApiError {
  return new ApiError({
    status: 413,
    message: `Request body exceeds the limit of ${limitBytes} bytes.`,
    code: 'request_too_large',
  })
}

async function readLimited(request: Request, limitBytes: number): Promise<Uint8Array> {
  const declared = request.headers.get('content-length')
  if (declared !== null) {
    // A declared length is enforced by the server itself, so the native read is safe and fast.
    if (Number(declared) > limitBytes) throw tooLarge(limitBytes)
    return new Uint8Array(await request.arrayBuffer())
  }
  if (!request.body) return new Uint8Array()
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of request.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength
    if (size > limitBytes) throw tooLarge(limitBytes)
    chunks.push(chunk)
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)
}

export function isJsonContentType(contentType: string | null): boolean {
  if (!contentType) return false
  const mediaType = contentType.split(';', 1)[0]!.trim().toLowerCase()
  return mediaType === 'application/json' || mediaType.endsWith('+json')
}

/** Reads and parses a JSON request body, or throws the ApiError that says why it cannot. */
export async function readJsonBody(
  request: Request,
  limitBytes: number,
  jsonLimits: JsonLimits = defaultJsonLimits,
): Promise<unknown> {
  if (!isJsonContentType(request.headers.get('content-type'))) {
    throw new ApiError({
      status: 415,
      message: 'Content-Type must be application/json.',
      code: 'unsupported_media_type',
    })
  }
  const bytes = await readLimited(request, limitBytes)
  let text: string
  try {
    text = utf8.decode(bytes)
  } catch {
    throw new ApiError({ status: 400, message: 'Request body is not valid UTF-8.', code: 'invalid_encoding' })
  }
  if (text.trim() === '') {
    throw new ApiError({
      status: 400,
      message: 'Request body is empty; a JSON object is required.',
      code: 'invalid_json',
    })
  }
  return parseLimitedJson(text, jsonLimits)
}
