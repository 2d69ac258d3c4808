/**
 * Relays an upstream chat stream to the client as SSE. The first chunk is awaited before
 * anything is sent, so a failure before the first byte still answers a normal JSON error
 * (and can be retried by a later layer). After that, a failure becomes an SSE error event
 * followed by the end of the stream: never a silent clean end. Every ending settles the
 * Exchange exactly once: finished, failed mid-stream, cancelled by the client, or cancelled
 * by an operator through the stream registry (an SSE error event with `code: "cancelled"`).
 * While the upstream is silent, comment heartbeats keep proxies from cutting the connection;
 * the stream registry's one ticker says when, so no stream holds a timer of its own.
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
import { rawDataOf } from '../upstream/sse'
import { clientDisconnected, failedWith, upstreamToApiError } from './upstream-errors'
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

/**
 * One `data:` frame as Elysia writes it (it calls `toSSE()` of a value marked `sse`): a
 * method on the prototype, where `sse()` gives each frame an object and a closure of its own.
 */
class Frame {
  readonly sse = true
  constructor(readonly data: string) {}
  toSSE(): string {
    return `data: ${this.data}\n\n`
  }
}

/** "data: " + payload + blank line, in UTF-8 bytes (Buffer.byteLength does not allocate). */
const frameBytes = (payload: string) => Buffer.byteLength(payload) + 8

const IDLE = Symbol('idle')
const CANCEL = Symbol('cancel')
type Woke = IteratorResult<ChatChunk> | typeof IDLE | typeof CANCEL

const USAGE_NULL = '"usage":null'

/**
 * The frame data the client gets for `chunk`: the upstream's own text when the provider kept
 * it (no JSON re-serialisation per chunk), with the model renamed and a `"usage":null` the
 * client did not ask for dropped by exact text edits. A chunk whose text does not allow them
 * unambiguously, or that has no text of its own, is serialised again. So is one the upstream
 * sent over several `data:` lines: the parser joined them with LF, and `Frame` writes one
 * line, so the client would get the first line only (JSON.stringify never writes an LF).
 */
function clientData(chunk: ChatChunk, modelField: string | null, clientModelField: string): string {
  let data = rawDataOf(chunk)
  if (data === undefined || data.includes('\n')) return JSON.stringify(chunk)
  if (modelField !== null) {
    const at = data.indexOf(modelField)
    if (at === -1 || data.indexOf(modelField, at + 1) !== -1) return JSON.stringify(chunk)
    data = data.slice(0, at) + clientModelField + data.slice(at + modelField.length)
  }
  if (chunk.usage === undefined && 'usage' in chunk) {
    const at = data.indexOf(USAGE_NULL)
    if (at === -1 || data.indexOf(USAGE_NULL, at + 1) !== -1) return JSON.stringify(chunk)
    // With the comma on either side that separated it from its neighbour.
    const before = data.charCodeAt(at - 1) === 44
    const from = before ? at - 1 : at
    const to =
      !before && data.charCodeAt(at + USAGE_NULL.length) === 44
        ? at + USAGE_NULL.length + 1
        : at + USAGE_NULL.length
    data = data.slice(0, from) + data.slice(to)
  }
  return data
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
  // The upstream's model name as it appears in a chunk's text, and the client's in its place.
  const clientModelField = `"model":${JSON.stringify(clientModel)}`
  let upstreamModel: unknown
  let modelField: string | null = null
  // While the relay waits for the upstream, `wake` ends the wait: with the next step, or IDLE
  // (the registry's heartbeat ticker), or CANCEL (an operator). Set only during a wait.
  let wake: ((woke: Woke) => void) | null = null
  let fail: ((error: unknown) => void) | null = null
  const onStep = (step: IteratorResult<ChatChunk>) => wake?.(step)
  const onError = (error: unknown) => fail?.(error)
  const handle = streams.open({
    exchange,
    cancel() {
      cancelled = true
      wake?.(CANCEL)
      abortUpstream()
    },
    idle() {
      wake?.(IDLE)
    },
  })
  try {
    let step = first
    relay: while (!step.done) {
      const chunk = step.value
      if (chunk.model !== upstreamModel) {
        upstreamModel = chunk.model
        modelField = chunk.model === clientModel ? null : `"model":${JSON.stringify(chunk.model)}`
      }
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
        const data = clientData(chunk, modelField, clientModelField)
        bytes += frameBytes(data)
        handle.progress(bytes, streamedChunks)
        yield new Frame(data)
      }
      if (cancelled) break
      const pending = iterator.next()
      pending.then(onStep, onError)
      for (;;) {
        const woke = await new Promise<Woke>((resolve, reject) => {
          wake = resolve
          fail = reject
        })
        wake = null
        fail = null
        if (woke === CANCEL) break relay
        if (woke !== IDLE) {
          step = woke
          break
        }
        bytes += heartbeatBytes
        handle.progress(bytes, streamedChunks)
        yield heartbeat
        if (cancelled) break relay
      }
    }
    if (cancelled) {
      yield* endCancelled()
      return
    }
    chargeEstimateUnlessReported()
    yield new Frame('[DONE]')
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
    chargeEstimateUnlessReported()
    exchange.settle(failedWith(apiError))
    yield new Frame(JSON.stringify(openAIErrorBody(apiError)))
  } finally {
    handle.close()
    wake = null
    fail = null
    if (!exchange.isSettled) {
      abortUpstream()
      await iterator.return?.()
      chargeEstimateUnlessReported()
      exchange.settle(clientDisconnected)
    }
  }

  /**
   * Without the upstream's usage (a stream cut, cancelled or broken before its final chunk,
   * or an upstream that never reports it), the charge is estimated: the prompt at the
   * admission estimate, a completion token per content chunk relayed.
   */
  function chargeEstimateUnlessReported() {
    if (sawUsage) return
    exchange.usage = {
      promptTokens: exchange.estimatedTokens,
      completionTokens: streamedChunks,
      cachedTokens: 0,
    }
  }

  /** Billed for what streamed, settled before the event so a client gone meanwhile changes nothing. */
  async function* endCancelled() {
    chargeEstimateUnlessReported()
    exchange.settle({ outcome: 'cancelled', status: cancelledError.status, errorCode: 'cancelled' })
    // The upstream was aborted, so its iterator finishes promptly; not awaited, nothing to wait for.
    iterator.return?.()?.catch(() => {})
    yield new Frame(JSON.stringify(openAIErrorBody(cancelledError)))
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
