/**
 * The OpenAI-compatible surface: chat completions (JSON and SSE), embeddings, models.
 * Each model route owns its Exchange: it names the route and models on it, calls the
 * upstream with an abort signal tied to the client, and settles it exactly once.
 */
import { Elysia, t } from 'elysia'
import type { auth } from '../../plugins/auth'
import {
  type ApiError,
  type Exchange,
  type exchange as exchangePlugin,
  freePrice,
  type Price,
  type Principal,
  priceFromUsdPerMillion,
} from '../../plugins/exchange'
import type { QuotaService } from '../../plugins/quota'
import type { ModelConfig } from '../config'
import type { ChatRequest, EmbeddingRequest, EmbeddingResponse as WireEmbeddings } from '../upstream/provider'
import type { ModelRouter } from '../upstream/router'
import { openStream, relayStream } from './chat-stream'
import {
  ChatCompletionRequest,
  ChatCompletionResponse,
  ChatCompletionStreamFrame,
  EmbeddingRequest as EmbeddingRequestSchema,
  EmbeddingResponse,
  ModelList,
  modelErrorResponses,
} from './openai-schemas'
import { upstreamToApiError } from './upstream-errors'
import { estimateInputTokens, estimatePromptTokens, recordUsage } from './usage'

export interface OpenAIRoutesOptions {
  router: ModelRouter
  /** The app's exchange plugin instance, for the `exchange` it derives. */
  spine: ReturnType<typeof exchangePlugin>
  /** The app's auth plugin instance, for the `apiKey` macro. */
  auth: ReturnType<typeof auth>
  /** Reserves quota before the upstream call; throws the 429 when a limit denies. */
  admission: QuotaService
}

/** Ties the upstream call to the client: a client that goes away aborts the upstream. */
function upstreamController(clientSignal: AbortSignal): AbortController {
  const controller = new AbortController()
  if (clientSignal.aborted) controller.abort()
  else clientSignal.addEventListener('abort', () => controller.abort(), { once: true })
  return controller
}

function openExchange(exchange: Exchange, route: string, principal: Principal, requestedModel: string) {
  exchange.route = route
  exchange.principal = principal
  exchange.requestedModel = requestedModel
}

function serveWith(exchange: Exchange, model: ModelConfig, price: Price) {
  exchange.servedModel = model.name
  exchange.provider = model.provider
  exchange.upstreamModel = model.upstreamModel
  exchange.price = price
}

function failExchange(exchange: Exchange, error: unknown, clientSignal: AbortSignal): ApiError {
  const apiError = upstreamToApiError(error)
  if (clientSignal.aborted)
    exchange.settle({ outcome: 'cancelled', status: 499, errorCode: 'client_disconnected' })
  else
    exchange.settle({
      outcome: 'error',
      status: apiError.status,
      errorCode: apiError.code ?? 'upstream_error',
    })
  return apiError
}

function float32Base64(vector: number[]): string {
  return Buffer.from(new Float32Array(vector).buffer).toString('base64')
}

function encodeEmbeddings(
  response: WireEmbeddings,
  format: 'float' | 'base64',
  model: string,
): WireEmbeddings {
  const data = response.data.map((item) => ({
    object: 'embedding' as const,
    index: item.index,
    embedding:
      format === 'base64' && Array.isArray(item.embedding) ? float32Base64(item.embedding) : item.embedding,
  }))
  return { object: 'list', data, model, usage: response.usage }
}

const tags = ['openai']
const security = [{ bearerAuth: [] }]

export function openAIRoutes({ router, spine, auth, admission }: OpenAIRoutesOptions) {
  const prices = new Map(
    router
      .list()
      .map((model) => [model.name, model.pricing ? priceFromUsdPerMillion(model.pricing) : freePrice]),
  )
  const priceOf = (model: ModelConfig) => prices.get(model.name) ?? freePrice
  return new Elysia({ name: 'tollgate/routes/openai' })
    .use(spine)
    .use(auth)
    .post(
      '/v1/chat/completions',
      async function* createChatCompletion({ body, exchange, principal, request, set }) {
        openExchange(exchange, '/v1/chat/completions', principal, body.model)
        const target = router.resolve(body.model, 'chat')
        serveWith(exchange, target.model, priceOf(target.model))
        exchange.stream = body.stream === true
        exchange.estimatedTokens = estimatePromptTokens(body)
        Object.assign(
          set.headers,
          await admission.reserve(exchange, body.max_completion_tokens ?? body.max_tokens ?? null),
        )
        const upstream = upstreamController(request.signal)
        const upstreamRequest = { ...body, model: target.model.upstreamModel } as ChatRequest
        const context = { signal: upstream.signal, headers: { 'x-request-id': exchange.id } }
        exchange.attempts = 1

        if (!exchange.stream) {
          try {
            const completion = await target.provider.chat(upstreamRequest, context)
            recordUsage(exchange, completion.usage)
            exchange.finishReasons = completion.choices.map((choice) => choice.finish_reason ?? 'unknown')
            exchange.settle({ outcome: 'ok', status: 200 })
            return { ...completion, model: body.model }
          } catch (error) {
            throw failExchange(exchange, error, request.signal)
          }
        }

        let opened: Awaited<ReturnType<typeof openStream>>
        try {
          opened = await openStream(target.provider.chatStream(upstreamRequest, context))
        } catch (error) {
          throw failExchange(exchange, error, request.signal)
        }
        set.headers['cache-control'] = 'no-cache'
        yield* relayStream(opened.iterator, opened.first, {
          exchange,
          clientModel: body.model,
          includeUsage: body.stream_options?.include_usage === true,
          clientSignal: request.signal,
          abortUpstream: () => upstream.abort(),
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
            'OpenAI-compatible. With `stream: true` the answer is Server-Sent Events: `data: {chunk}` frames ending with `data: [DONE]`; `stream_options.include_usage` adds a final usage chunk.',
          tags,
          security,
        },
      },
    )
    .post(
      '/v1/embeddings',
      async function createEmbeddings({ body, exchange, principal, request, set }) {
        openExchange(exchange, '/v1/embeddings', principal, body.model)
        const target = router.resolve(body.model, 'embedding')
        serveWith(exchange, target.model, priceOf(target.model))
        exchange.estimatedTokens = estimateInputTokens(body.input)
        Object.assign(set.headers, await admission.reserve(exchange, 0))
        exchange.attempts = 1
        const upstream = upstreamController(request.signal)
        const upstreamRequest: EmbeddingRequest = {
          ...body,
          model: target.model.upstreamModel,
          encoding_format: 'float',
        }
        try {
          const response = await target.provider.embeddings(upstreamRequest, {
            signal: upstream.signal,
            headers: { 'x-request-id': exchange.id },
          })
          recordUsage(exchange, { ...response.usage, completion_tokens: 0 })
          exchange.settle({ outcome: 'ok', status: 200 })
          return encodeEmbeddings(response, body.encoding_format ?? 'float', body.model)
        } catch (error) {
          throw failExchange(exchange, error, request.signal)
        }
      },
      {
        apiKey: true,
        body: EmbeddingRequestSchema,
        response: { 200: EmbeddingResponse, ...modelErrorResponses },
        detail: { summary: 'Create embeddings', tags, security },
      },
    )
    .get(
      '/v1/models',
      function listModels() {
        return {
          object: 'list' as const,
          data: router.list().map((model) => ({
            id: model.name,
            object: 'model' as const,
            created: 0,
            owned_by: model.provider,
          })),
        }
      },
      {
        apiKey: true,
        response: { 200: ModelList, 401: modelErrorResponses[401] },
        detail: { summary: 'List the models this gateway serves', tags, security },
      },
    )
}
