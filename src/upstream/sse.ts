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

export async function* parseSSE(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<SSEEvent, SSEEnd, undefined> {
  const reader = body.getReader()
  // One regex per stream: its lastIndex is cursor state, and generators interleave.
  const lineEnd = /\r\n|\r|\n/g
  // `stream: true` holds back a multi-byte character split across chunks until its last byte arrives.
  const decoder = new TextDecoder()
  const cancelRead = () => void reader.cancel(signal?.reason).catch(() => {})
  signal?.addEventListener('abort', cancelRead, { once: true })
  let buffer = ''
  let data: string[] = []
  let dataChars = 0
  let event: string | undefined
  let exhausted = false
  try {
    signal?.throwIfAborted()
    while (!exhausted) {
      const { done, value } = await reader.read()
      signal?.throwIfAborted()
      exhausted = done
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true })
      let lineStart = 0
      lineEnd.lastIndex = 0
      for (let match = lineEnd.exec(buffer); match !== null; match = lineEnd.exec(buffer)) {
        // A CR that ends the buffer may be the first half of a CRLF still in flight.
        if (!done && match[0] === '\r' && match.index === buffer.length - 1) break
        const line = buffer.slice(lineStart, match.index)
        lineStart = match.index + match[0].length
        if (line === '') {
          const payload = data.join('\n')
          const name = event
          const dispatch = data.length > 0
          data = []
          dataChars = 0
          event = undefined
          if (!dispatch) continue
          if (payload.trim() === '[DONE]') return 'done'
          yield name === undefined ? { data: payload } : { event: name, data: payload }
          continue
        }
        if (line.charCodeAt(0) === COLON) continue
        const colon = line.indexOf(':')
        const field = colon === -1 ? line : line.slice(0, colon)
        let value = colon === -1 ? '' : line.slice(colon + 1)
        if (value.charCodeAt(0) === SPACE) value = value.slice(1)
        if (field === 'data') {
          data.push(value)
          dataChars += value.length
        } else if (field === 'event') event = value
      }
      buffer = buffer.slice(lineStart)
      if (buffer.length + dataChars > MAX_EVENT_CHARS)
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
