/**
 * The OpenAI-compatible surface: chat completions (JSON and SSE), embeddings, models.
 * Each model route owns its Exchange: it names the route and models on it, calls the
 * upstream with an abort signal tied to the client, and settles it exactly once.
 *
 * The cache lookup is issued in the same tick as the quota reservation, so both go to Redis
 * in one pipeline. A hit settles the Exchange as `cached` with the usage the answer cost
 * when it was made (so the saving is priced) and answers the stored bytes, or replays them
 * as SSE; a miss hands its answer to the cache, which stores it at settlement.
 */
import { Elysia, t } from 'elysia'
import type { auth } from '../../plugins/auth'
import { type CacheHit, type CacheService, parseCacheControl, type ResponseLookup } from '../../plugins/cache'
import {
  type ApiError,
  costOf,
  type Exchange,
  type exchange as exchangePlugin,
  type Price,
  type Principal,
} from '../../plugins/exchange'
import type { QuotaService } from '../../plugins/quota'
import type { StreamRegistry } from '../../plugins/streams'
import type { ModelConfig } from '../config'
import type { ChatRequest, EmbeddingRequest } from '../upstream/provider'
import { type Resilience, serveWith } from '../upstream/resilient'
import type { ModelRouter } from '../upstream/router'
import { answerFromCache, relayStream } from './chat-stream'
import { embeddingItems, encodeEmbeddings, vectorsInOrder } from './embedding-vectors'
import {
  ChatCompletionRequest,
  ChatCompletionResponse,
  ChatCompletionStreamFrame,
  EmbeddingRequest as EmbeddingRequestSchema,
  EmbeddingResponse,
  ModelList,
  modelErrorResponses,
} from './openai-schemas'
import { clientDisconnected, failedWith, upstreamToApiError } from './upstream-errors'
import { estimateInputTokens, estimatePromptTokens, recordUsage } from './usage'

export interface OpenAIRoutesOptions {
  router: ModelRouter
  /** The app's exchange plugin instance, for the `exchange` it derives. */
  spine: ReturnType<typeof exchangePlugin>
  /** The app's auth plugin instance, for the `apiKey` macro. */
  auth: ReturnType<typeof auth>
  /** Reserves quota before the upstream call; throws the 429 when a limit denies. */
  admission: QuotaService
  /** Answers repeated requests, and stores what misses produce. */
  cache: CacheService
  /** Every upstream call goes through it: breakers, retries, timeouts and fallbacks. */
  resilience: Resilience
  /** A model's price, converted once at startup. */
  priceOf: (model: ModelConfig) => Price
  /** Where relayed streams are listed (and cancelled from) while they run. */
  streams: StreamRegistry
}

function openExchange(exchange: Exchange, route: string, principal: Principal, requestedModel: string) {
  exchange.route = route
  exchange.principal = principal
  exchange.requestedModel = requestedModel
}

function failExchange(exchange: Exchange, error: unknown, clientSignal: AbortSignal): ApiError {
  const apiError = upstreamToApiError(error)
  exchange.settle(clientSignal.aborted ? clientDisconnected : failedWith(apiError))
  return apiError
}

const ignore = () => {}

const tags = ['openai']
const security = [{ bearerAuth: [] }]

export function openAIRoutes({
  router,
  spine,
  auth,
  admission,
  cache,
  resilience,
  priceOf,
  streams,
}: OpenAIRoutesOptions) {
  // The router's models are fixed when it is built, so their list is answered as built once.
  const modelList = {
    object: 'list' as const,
    data: router.list().map((model) => ({
      id: model.name,
      object: 'model' as const,
      created: 0,
      owned_by: model.provider,
    })),
  }
  return new Elysia({ name: 'tollgate/routes/openai' })
    .use(spine)
    .use(auth)
    .post(
      '/v1/chat/completions',
      async function* createChatCompletion({ body, exchange, principal, request, set, checkPrompt }) {
        openExchange(exchange, '/v1/chat/completions', principal, body.model)
        checkPrompt(body, principal)
        const target = router.resolve(body.model, 'chat')
        serveWith(exchange, target.model, priceOf(target.model))
        exchange.stream = body.stream === true
        exchange.estimatedTokens = estimatePromptTokens(body)
        const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? null
        const directives = parseCacheControl(request.headers.get('cache-control'))
        const admissionStarted = performance.now()
        let admitted: [Record<string, string>, ResponseLookup]
        try {
          admitted = await Promise.all([
            admission.reserve(exchange, maxTokens),
            cache.responses.lookup(exchange, body, directives),
          ])
        } catch (error) {
          cache.responses.abandon(exchange)
          throw error
        }
        exchange.recordPhase('quota', admissionStarted)
        exchange.recordPhase('cache.lookup', admissionStarted, { 'tollgate.cache': exchange.cacheStatus })
        const [rateHeaders, lookup] = admitted
        Object.assign(set.headers, rateHeaders)
        const hit = await cache.responses.claim(exchange, lookup, request.signal)
        set.headers['x-cache'] = exchange.cacheStatus
        const includeUsage = body.stream_options?.include_usage === true
        if (hit) return answerFromCache(exchange, hit, includeUsage, set.headers)
        // A follower whose client left while it waited: the upstream call below fails at once,
        // and the Exchange settles as cancelled on the usual path.
        const stale = () => cache.responses.lookupStale(exchange, body, directives)
        // The client's model name: resilience swaps in each target's upstream id.
        const upstreamRequest = body as ChatRequest

        if (!exchange.stream) {
          try {
            // Only the client ends a JSON call early: its own signal is the one to follow.
            const call = { signal: request.signal, stale, resolved: target }
            const answer = await resilience.chat(exchange, upstreamRequest, call)
            Object.assign(set.headers, answer.headers)
            if (answer.stale) return answerFromCache(exchange, answer.value, includeUsage, set.headers)
            const reply = answer.value
            recordUsage(exchange, reply.usage)
            exchange.finishReasons = reply.choices.map((choice) => choice.finish_reason ?? 'unknown')
            // The answer is this request's own object (as the relay does with chunks): renamed, not copied.
            reply.model = body.model
            cache.responses.record(exchange, reply)
            exchange.settle({ outcome: 'ok', status: 200 })
            return reply
          } catch (error) {
            throw failExchange(exchange, error, request.signal)
          }
        }

        let opened: Awaited<ReturnType<typeof resilience.chatStream<CacheHit>>>
        try {
          // Like a JSON call, the stream follows the client's own signal (its call timer links to it).
          const call = { signal: request.signal, stale, resolved: target }
          opened = await resilience.chatStream(exchange, upstreamRequest, call)
        } catch (error) {
          throw failExchange(exchange, error, request.signal)
        }
        Object.assign(set.headers, opened.headers)
        if (opened.stale) return answerFromCache(exchange, opened.value, includeUsage, set.headers)
        set.headers['cache-control'] = 'no-cache'
        const { iterator, first } = opened.value
        yield* relayStream(iterator, first, {
          exchange,
          clientModel: body.model,
          includeUsage,
          clientSignal: request.signal,
          // A stream may also be cut from this side (the relay, an admin's cancel): closing the
          // guarded iterator aborts the call's timer, and with it the upstream request, at once.
          abortUpstream: () => void iterator.return?.().catch(ignore),
          collect: cache.responses.collector(exchange),
          streams,
        })
      },
      {
        apiKey: true,
        body: ChatCompletionRequest,
        response: {
          200: t.Union([ChatCompletionResponse, ChatCompletionStreamFrame]),
          ...modelErrorResponses,
        },
        detail: {
          summary: 'Create a chat completion',
          description:
            'OpenAI-compatible. With `stream: true` the answer is Server-Sent Events: `data: {chunk}` frames ending with `data: [DONE]`; `stream_options.include_usage` adds a final usage chunk. Deterministic requests (temperature 0 or a seed, by default) are cached: `X-Cache: HIT|MISS|BYPASS` and `Age` say how it was answered; `Cache-Control: no-cache` (refresh), `no-store` (bypass) and `max-age=N` apply per request.',
          tags,
          security,
        },
      },
    )
    .post(
      '/v1/embeddings',
      async function createEmbeddings({ body, exchange, principal, request, set, checkPrompt }) {
        openExchange(exchange, '/v1/embeddings', principal, body.model)
        checkPrompt(body, principal)
        const target = router.resolve(body.model, 'embedding')
        serveWith(exchange, target.model, priceOf(target.model))
        exchange.estimatedTokens = estimateInputTokens(body.input)
        const items = embeddingItems(body.input)
        const directives = parseCacheControl(request.headers.get('cache-control'))
        const admissionStarted = performance.now()
        const [rateHeaders, batch] = await Promise.all([
          admission.reserve(exchange, 0),
          cache.embeddings.lookup(exchange, body, items, directives),
        ])
        exchange.recordPhase('quota', admissionStarted)
        exchange.recordPhase('cache.lookup', admissionStarted, { 'tollgate.cache': exchange.cacheStatus })
        Object.assign(set.headers, rateHeaders)
        set.headers['x-cache'] = exchange.cacheStatus
        set.headers['x-cache-hits'] = String(batch.hits)
        const format = body.encoding_format ?? 'float'
        if (batch.upstream.length === 0) {
          exchange.usage = { promptTokens: batch.cachedTokens, completionTokens: 0, cachedTokens: 0 }
          exchange.settle({ outcome: 'cached', status: 200 })
          set.headers.age = String(batch.ageSeconds)
          return encodeEmbeddings(batch.complete(), format, body.model, { prompt_tokens: 0, total_tokens: 0 })
        }
        const upstreamRequest: EmbeddingRequest = {
          ...body,
          input: batch.upstreamInputs() as string[] | number[][],
          encoding_format: 'float',
        }
        try {
          const { value: response, headers } = await resilience.embeddings(exchange, upstreamRequest, {
            signal: request.signal,
            resolved: target,
          })
          Object.assign(set.headers, headers)
          batch.fill(vectorsInOrder(response, batch.upstream.length), response.usage.prompt_tokens)
          recordUsage(exchange, { ...response.usage, completion_tokens: 0 })
          // Usage and cost count what went upstream; the inputs from the cache are a saving.
          exchange.savedNanoUsd = costOf(exchange.price, {
            promptTokens: batch.cachedTokens,
            completionTokens: 0,
            cachedTokens: 0,
          })
          exchange.settle({ outcome: 'ok', status: 200 })
          return encodeEmbeddings(batch.complete(), format, body.model, response.usage)
        } catch (error) {
          throw failExchange(exchange, error, request.signal)
        }
      },
      {
        apiKey: true,
        body: EmbeddingRequestSchema,
        response: { 200: EmbeddingResponse, ...modelErrorResponses },
        detail: {
          summary: 'Create embeddings',
          description:
            'OpenAI-compatible. Each input is cached on its own: only uncached inputs go upstream, and usage counts only those. `X-Cache` is HIT when every input came from the cache; `X-Cache-Hits` counts the inputs that did.',
          tags,
          security,
        },
      },
    )
    .get(
      '/v1/models',
      function listModels() {
        return modelList
      },
      {
        apiKey: true,
        response: { 200: ModelList, 401: modelErrorResponses[401] },
        detail: { summary: 'List the models this gateway serves', tags, security },
      },
    )
}
