/**
 * Relays an upstream chat stream to the client as SSE. The first chunk is awaited before
 * anything is sent, so a failure before the first byte still answers a normal JSON error
 * (and can be retried by a later layer). After that, a failure becomes an SSE error event
 * followed by the end of the stream: never a silent clean end. Every ending settles the
 * Exchange exactly once: finished, failed mid-stream, or cancelled by the client.
 *
 * A cache hit is answered here too: the stored JSON, or its replay as a complete stream.
 */
import { sse } from 'elysia'
import { type CacheHit, replayFrames } from '../../plugins/cache'
import { type Exchange, openAIErrorBody } from '../../plugins/exchange'
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
  /** Aborts the upstream request; called when the client goes away. */
  abortUpstream: () => void
  /** Sees every chunk (usage included) as relayed, e.g. to assemble the answer for the cache. */
  collect?: (chunk: ChatChunk) => void
}

export async function* relayStream(
  iterator: AsyncIterator<ChatChunk>,
  first: IteratorResult<ChatChunk>,
  { exchange, clientModel, includeUsage, clientSignal, abortUpstream, collect }: RelayOptions,
) {
  let streamedChunks = 0
  let sawUsage = false
  try {
    for (let step = first; !step.done; step = await iterator.next()) {
      const chunk = step.value
      chunk.model = clientModel
      collect?.(chunk)
      if (chunk.usage) {
        recordUsage(exchange, chunk.usage)
        sawUsage = true
        if (!includeUsage) continue
      } else if (!includeUsage) {
        chunk.usage = undefined
      }
      for (const choice of chunk.choices) {
        if (choice.delta.content) streamedChunks++
        if (choice.finish_reason) exchange.finishReasons.push(choice.finish_reason)
      }
      exchange.markFirstToken()
      yield sse({ data: JSON.stringify(chunk) })
    }
    if (!sawUsage) exchange.usage.completionTokens = streamedChunks
    yield sse({ data: '[DONE]' })
    exchange.settle({ outcome: 'ok', status: 200 })
  } catch (error) {
    if (exchange.isSettled || clientSignal.aborted) return
    const apiError = upstreamToApiError(error)
    if (!sawUsage) exchange.usage.completionTokens = streamedChunks
    exchange.settle({
      outcome: 'error',
      status: apiError.status,
      errorCode: apiError.code ?? 'upstream_error',
    })
    yield sse({ data: JSON.stringify(openAIErrorBody(apiError)) })
  } finally {
    if (!exchange.isSettled) {
      abortUpstream()
      await iterator.return?.()
      if (!sawUsage) exchange.usage.completionTokens = streamedChunks
      exchange.settle({ outcome: 'cancelled', status: 499, errorCode: 'client_disconnected' })
    }
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
