/**
 * Server-Sent Events, both ways. Upstream streams arrive in arbitrary network chunks, so the
 * parser works incrementally (the WHATWG event-stream rules: CR, LF or CRLF line ends,
 * multi-line `data:`, `:` comments) and never waits for the whole body. OpenAI-style streams
 * end with `data: [DONE]`; whether a stream reached it is the parser's return value, because
 * a stream that merely stops is a truncated answer, not a complete one.
 */

/** One dispatched event. `id` and `retry` are read and dropped: no model stream is resumable. */
export interface SSEEvent {
  event?: string
  data: string
}

/** How a parsed stream ended: at `data: [DONE]`, or at the end of the body without it. */
export type SSEEnd = 'done' | 'eof'

/** Thrown when a stream breaks the format in a way no client could recover from. */
export class SSEFormatError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'SSEFormatError'
  }
}

/** Bounds the memory one event may take, so a stream without line ends cannot exhaust it. */
export const MAX_EVENT_CHARS = 8 * 1024 * 1024

const COLON = 58
const SPACE = 32
const CR = 13
const LF = 10
const decodeStreaming = { stream: true }

/** Length of the line end found by `lineEnd` (1, or 2 for CRLF); read right after the call. */
let lineEndLength = 1

/**
 * Index of the first line end in `text` at or after `from`, or -1. `crlf`: whether `text`
 * holds a CR at all; without one (the usual stream) a line ends at LF and `indexOf` finds it.
 */
function lineEnd(text: string, from: number, crlf: boolean): number {
  if (!crlf) {
    lineEndLength = 1
    return text.indexOf('\n', from)
  }
  for (let i = from; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code === LF) {
      lineEndLength = 1
      return i
    }
    if (code === CR) {
      lineEndLength = text.charCodeAt(i + 1) === LF ? 2 : 1
      return i
    }
  }
  return -1
}

/**
 * The text of the `data:` field an event arrived with, kept on the object parsed from it, so
 * a relay can pass the upstream's own bytes on instead of serialising the object again.
 */
const RAW_DATA = Symbol('sse data')

export function withRawData<T extends object>(value: T, data: string): T {
  ;(value as Record<symbol, unknown>)[RAW_DATA] = data
  return value
}

export function rawDataOf(value: object): string | undefined {
  return (value as Record<symbol, unknown>)[RAW_DATA] as string | undefined
}

export async function* parseSSE(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<SSEEvent, SSEEnd, undefined> {
  const reader = body.getReader()
  // `stream: true` holds back a multi-byte character split across chunks until its last byte arrives.
  const decoder = new TextDecoder()
  const cancelRead = () => void reader.cancel(signal?.reason).catch(() => {})
  signal?.addEventListener('abort', cancelRead, { once: true })
  let buffer = ''
  // One `data:` line is the usual event: kept as it is, joined only when a second one comes.
  let data: string | null = null
  let event: string | undefined
  let exhausted = false
  try {
    signal?.throwIfAborted()
    while (!exhausted) {
      const { done, value } = await reader.read()
      signal?.throwIfAborted()
      exhausted = done
      buffer += done ? decoder.decode() : decoder.decode(value, decodeStreaming)
      const crlf = buffer.includes('\r')
      let lineStart = 0
      for (let end = lineEnd(buffer, 0, crlf); end !== -1; end = lineEnd(buffer, lineStart, crlf)) {
        // A CR that ends the buffer may be the first half of a CRLF still in flight.
        if (!done && end === buffer.length - 1 && buffer.charCodeAt(end) === CR) break
        const start = lineStart
        lineStart = end + lineEndLength
        if (end === start) {
          const payload = data
          const name = event
          data = null
          event = undefined
          if (payload === null) continue
          if (payload === '[DONE]' || (payload.length < 16 && payload.trim() === '[DONE]')) return 'done'
          yield name === undefined ? { data: payload } : { event: name, data: payload }
          continue
        }
        if (buffer.charCodeAt(start) === COLON) continue
        const colon = buffer.indexOf(':', start)
        const fieldEnd = colon === -1 || colon > end ? end : colon
        let valueStart = fieldEnd === end ? end : fieldEnd + 1
        if (valueStart < end && buffer.charCodeAt(valueStart) === SPACE) valueStart++
        if (fieldEnd - start === 4 && buffer.startsWith('data', start)) {
          const line = buffer.slice(valueStart, end)
          data = data === null ? line : `${data}\n${line}`
        } else if (fieldEnd - start === 5 && buffer.startsWith('event', start))
          event = buffer.slice(valueStart, end)
      }
      buffer = buffer.slice(lineStart)
      if (buffer.length + (data?.length ?? 0) > MAX_EVENT_CHARS)
        throw new SSEFormatError(`an event exceeded ${MAX_EVENT_CHARS} characters`)
    }
    return 'eof'
  } finally {
    signal?.removeEventListener('abort', cancelRead)
    // Stopping before the body's end (a consumer that breaks, an error, [DONE] with bytes
    // still due) must release it, so fetch closes the connection instead of leaving the
    // upstream generating into the void.
    if (!exhausted) await reader.cancel().catch(() => {})
    reader.releaseLock()
  }
}

const encoder = new TextEncoder()

/** One `data:` frame; multi-line data becomes one `data:` line per line, as the format requires. */
export function sseFrame(data: string): string {
  return data.includes('\n') || data.includes('\r')
    ? `${data
        .split(/\r\n|\r|\n/)
        .map((line) => `data: ${line}`)
        .join('\n')}\n\n`
    : `data: ${data}\n\n`
}

export const SSE_DONE = 'data: [DONE]\n\n'

/** The bytes of one frame, for writers that enqueue into a byte stream. */
export function sseFrameBytes(data: string): Uint8Array {
  return encoder.encode(sseFrame(data))
}
