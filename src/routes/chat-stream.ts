/**
 * Relays an upstream chat stream to the client as SSE. The first chunk is awaited before
 * anything is sent, so a failure before the first byte still answers a normal JSON error
 * (and can be retried by a later layer). After that, a failure becomes an SSE error event
 * followed by the end of the stream: never a silent clean end. Every ending settles the
 * Exchange exactly once: finished, failed mid-stream, cancelled by the client, or cancelled
 * by an operator through the stream registry (an SSE error event with `code: "cancelled"`).
 * While the upstream is silent, comment heartbeats keep proxies from cutting the connection.
 *
 * Backpressure needs no buffer of our own: Elysia (1.4) turns the route's generator into a
 * pull-based ReadableStream (default highWaterMark: one chunk), and Bun pulls it only as the
 * socket takes bytes. So the relay asks the upstream for its next chunk only when the client
 * has made room, and the upstream fetch body is pulled the same way: a reader that stops
 * stalls the upstream after the sockets' buffers fill (test/backpressure.test.ts measures it).
 *
 * A cache hit is answered here too: the stored JSON, or its replay as a complete stream.
 */
import { sse } from 'elysia'
import { type CacheHit, replayFrames } from '../../plugins/cache'
import { ApiError, type Exchange, openAIErrorBody } from '../../plugins/exchange'
import type { StreamRegistry } from '../../plugins/streams'
import type { ChatChunk } from '../upstream/provider'
import { upstreamToApiError } from './upstream-errors'
import { recordUsage } from './usage'

export interface RelayOptions {
  exchange: Exchange
  /** The model name the client asked for; chunks report it as the OpenAI API does. */
  clientModel: string
  includeUsage: boolean
  /** The client's request signal: once it aborts, a failure is a cancellation, not an error. */
  clientSignal: AbortSignal
  /** Aborts the upstream request; called when the client goes away or the stream is cancelled. */
  abortUpstream: () => void
  /** Sees every chunk (usage included) as relayed, e.g. to assemble the answer for the cache. */
  collect?: (chunk: ChatChunk) => void
  /** Lists the stream while it runs, lets an operator cancel it, and sets the heartbeat interval. */
  streams: StreamRegistry
}

/**
 * An SSE comment line: clients (the OpenAI SDKs, EventSource) ignore it, proxies see bytes.
 * Elysia writes a yielded value's `toSSE()` as it is, so the comment goes out raw.
 */
const heartbeat = Object.assign(sse({ data: '' }), { toSSE: () => ': ping\n\n' })
const heartbeatBytes = 8

/**
 * What an operator's cancel sends: `server_error`, since the gateway ended the stream and
 * nothing in the request was wrong; the code tells it apart from an upstream failure.
 */
const cancelledError = new ApiError({
  status: 499,
  type: 'server_error',
  code: 'cancelled',
  message: 'The stream was cancelled by an operator.',
})

/** "data: " + payload + blank line, in UTF-8 bytes (Buffer.byteLength does not allocate). */
const frameBytes = (payload: string) => Buffer.byteLength(payload) + 8

const IDLE = Symbol('idle')
const CANCEL = Symbol('cancel')

/** The next upstream step, or IDLE after `idleMs` of silence, or CANCEL once `cancelled` resolves. */
function nextOrWake<T>(pending: Promise<T>, cancelled: Promise<typeof CANCEL>, idleMs: number) {
  let timer: ReturnType<typeof setTimeout> | undefined
  const idle = new Promise<typeof IDLE>((resolve) => {
    timer = setTimeout(resolve, idleMs, IDLE)
  })
  return Promise.race([pending, cancelled, idle]).finally(() => clearTimeout(timer))
}

export async function* relayStream(
  iterator: AsyncIterator<ChatChunk>,
  first: IteratorResult<ChatChunk>,
  { exchange, clientModel, includeUsage, clientSignal, abortUpstream, collect, streams }: RelayOptions,
) {
  let streamedChunks = 0
  let sawUsage = false
  let bytes = 0
  let cancelled = false
  let signalCancel = () => {}
  // Raced with every wait for the upstream, so a cancel takes effect while it is silent.
  const cancelRequested = new Promise<typeof CANCEL>((resolve) => {
    signalCancel = () => resolve(CANCEL)
  })
  const handle = streams.open({
    exchange,
    cancel() {
      cancelled = true
      signalCancel()
      abortUpstream()
    },
  })
  try {
    let step = first
    relay: while (!step.done) {
      const chunk = step.value
      chunk.model = clientModel
      collect?.(chunk)
      let relay = true
      if (chunk.usage) {
        recordUsage(exchange, chunk.usage)
        sawUsage = true
        relay = includeUsage
      } else if (!includeUsage) {
        chunk.usage = undefined
      }
      if (relay) {
        for (const choice of chunk.choices) {
          if (choice.delta.content) streamedChunks++
          if (choice.finish_reason) exchange.finishReasons.push(choice.finish_reason)
        }
        exchange.markFirstToken()
        const data = JSON.stringify(chunk)
        bytes += frameBytes(data)
        handle.progress(bytes, streamedChunks)
        yield sse({ data })
      }
      const pending = iterator.next()
      // A cancel can win the race and leave this to reject unobserved once the upstream aborts.
      pending.catch(() => {})
      for (;;) {
        const woke = await nextOrWake(pending, cancelRequested, streams.heartbeatMs)
        if (woke === CANCEL) break relay
        if (woke !== IDLE) {
          step = woke
          break
        }
        bytes += heartbeatBytes
        handle.progress(bytes, streamedChunks)
        yield heartbeat
      }
    }
    if (cancelled) {
      yield* endCancelled()
      return
    }
    if (!sawUsage) exchange.usage.completionTokens = streamedChunks
    yield sse({ data: '[DONE]' })
    exchange.settle({ outcome: 'ok', status: 200 })
  } catch (error) {
    if (exchange.isSettled) return
    // An operator's cancel aborts the upstream, so the pending read may fail before the race sees it.
    if (cancelled) {
      yield* endCancelled()
      return
    }
    if (clientSignal.aborted) return
    const apiError = upstreamToApiError(error)
    if (!sawUsage) exchange.usage.completionTokens = streamedChunks
    exchange.settle({
      outcome: 'error',
      status: apiError.status,
      errorCode: apiError.code ?? 'upstream_error',
    })
    yield sse({ data: JSON.stringify(openAIErrorBody(apiError)) })
  } finally {
    handle.close()
    if (!exchange.isSettled) {
      abortUpstream()
      await iterator.return?.()
      if (!sawUsage) exchange.usage.completionTokens = streamedChunks
      exchange.settle({ outcome: 'cancelled', status: 499, errorCode: 'client_disconnected' })
    }
  }

  /** Billed for what streamed, settled before the event so a client gone meanwhile changes nothing. */
  async function* endCancelled() {
    if (!sawUsage) exchange.usage.completionTokens = streamedChunks
    exchange.settle({ outcome: 'cancelled', status: cancelledError.status, errorCode: 'cancelled' })
    // The upstream was aborted, so its iterator finishes promptly; not awaited, nothing to wait for.
    iterator.return?.()?.catch(() => {})
    yield sse({ data: JSON.stringify(openAIErrorBody(cancelledError)) })
  }
}

/**
 * The answer of a hit, settling the Exchange as cached: the stored JSON as it is, or its
 * replay as SSE. A string with the headers set, not a Response: Elysia would re-wrap a
 * Response's body as a stream, which costs more than the whole lookup.
 */
export function answerFromCache(
  exchange: Exchange,
  hit: CacheHit,
  includeUsage: boolean,
  headers: Record<string, string | number>,
): string {
  exchange.usage = { ...hit.answer.usage }
  exchange.settle({ outcome: 'cached', status: 200 })
  headers.age = String(hit.ageSeconds)
  if (hit.coalesced) headers['x-cache-coalesced'] = 'true'
  if (!exchange.stream) {
    headers['content-type'] = 'application/json'
    return hit.answer.text()
  }
  exchange.markFirstToken()
  headers['content-type'] = 'text/event-stream'
  headers['cache-control'] = 'no-cache'
  return replayFrames(hit.answer.completion(), { includeUsage })
}
