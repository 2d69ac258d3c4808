/**
 * The ground every plugin stands on: derives one Exchange per request, holds requests to
 * the input limits (header size, body size and structure, prompt size per tier), and
 * renders every error in the envelope its surface promises.
 */
import { Elysia, ValidationError } from 'elysia'
import { defaultJsonLimits, readJsonBody } from './body'
import { ApiError, clipParam, errorResponse } from './errors'
import { Exchange, type Principal, type SettlementHub } from './exchange'
import { checkPromptLimits, type PromptBody, type PromptLimits, promptLimitsOf } from './prompt-limits'

export { tooLarge } from './body'
export { OpenAIErrorSchema, ProblemSchema } from './error-schemas'
export type { ErrorType, OpenAIErrorBody } from './errors'
export { ApiError, openAIErrorBody } from './errors'
export type {
  CacheStatus,
  MonthlyBudget,
  Outcome,
  Principal,
  SettleListener,
  Settlement,
  SettlePhase,
  Usage,
} from './exchange'
export { Exchange, SettlementHub } from './exchange'
export type { JsonLimits } from './json-limits'
export type { Price } from './money'
export { costOf, formatUsd, freePrice, priceFromUsdPerMillion, usdToNano } from './money'
export type { PromptBody, PromptLimits } from './prompt-limits'
export { checkPromptLimits, messageCharacters } from './prompt-limits'

export interface ExchangeOptions {
  /** Settlement subscribers; every feature plugin subscribes to the same hub. */
  hub: SettlementHub
  /**
   * Largest request body accepted, in bytes.
   * @default 1048576
   */
  bodyLimitBytes?: number
  /**
   * Deepest nesting of objects and arrays accepted in a JSON body (400 `json_too_deep`).
   * @default 64
   */
  maxJsonDepth?: number
  /**
   * Most elements in any one array of a JSON body (400 `json_array_too_long`).
   * @default 10000
   */
  maxJsonArrayLength?: number
  /**
   * Largest total size of the request headers (names, values and separators) accepted, in
   * bytes; beyond it the answer is 431. Bun's server refuses requests whose head exceeds its
   * own limit (16 KiB unless `bun --max-http-header-size`) with a bare 431 before any hook
   * runs, so this only tightens that.
   * @default 8192
   */
  maxHeaderBytes?: number
  /**
   * Prompt limits by tier name (`max_messages`, `max_prompt_chars`; null = unlimited),
   * which `checkPrompt` applies; the config's `tiers` can be passed as they are. A tier not
   * listed is unlimited.
   * @default {}
   */
  promptLimits?: Readonly<Record<string, PromptLimits>>
  /**
   * Called with errors that are not ApiErrors (bugs, dependency faults) before the client
   * gets a generic 500; the client never sees their message.
   * @default console.error
   */
  onUnexpectedError?: (error: unknown) => void
}

const requestIdPattern = /^[A-Za-z0-9._:-]{8,128}$/

/** Honours a well-formed incoming request id, else makes one. */
function requestIdFor(request: Request): string {
  const incoming = request.headers.get('x-request-id')
  return incoming && requestIdPattern.test(incoming) ? incoming : crypto.randomUUID()
}

/** Header bytes as they travel: `name: value` plus CRLF for each. */
function headerBytes(headers: Headers): number {
  let bytes = 0
  for (const [name, value] of headers) bytes += name.length + value.length + 4
  return bytes
}

function headersTooLarge(limit: number): ApiError {
  return new ApiError({
    status: 431,
    message: `Request headers exceed the limit of ${limit} bytes.`,
    code: 'headers_too_large',
  })
}

function hasBody(request: Request): boolean {
  if (request.method === 'GET' || request.method === 'HEAD') return false
  const length = request.headers.get('content-length')
  return length === null ? request.headers.has('transfer-encoding') : length !== '0'
}

/** Turns a validation failure into the OpenAI-style 400 with `param` naming the field. */
function validationToApiError(error: ValidationError): ApiError {
  const first = error.valueError
  const param = first?.path ? clipParam(first.path.replace(/^\//, '').replaceAll('/', '.')) : null
  const where = param ? `'${param}'` : 'request'
  const message = first ? `Invalid ${where}: ${first.message}.` : 'Invalid request.'
  return new ApiError({ status: 400, message, param, code: param ? 'invalid_value' : 'invalid_request' })
}

export function exchange({
  hub,
  bodyLimitBytes = 1_048_576,
  maxJsonDepth = defaultJsonLimits.maxDepth,
  maxJsonArrayLength = defaultJsonLimits.maxArrayLength,
  maxHeaderBytes = 8192,
  promptLimits = {},
  onUnexpectedError = console.error,
}: ExchangeOptions) {
  const jsonLimits = { maxDepth: maxJsonDepth, maxArrayLength: maxJsonArrayLength }
  /** For the model routes, once the principal is known and the body valid: 400 when over its tier's limits. */
  function checkPrompt(body: PromptBody, principal: Principal): void {
    checkPromptLimits(body, promptLimitsOf(principal, promptLimits))
  }
  return new Elysia({ name: 'tollgate/exchange', seed: { bodyLimitBytes, jsonLimits, maxHeaderBytes } })
    .decorate('settlements', hub)
    .decorate('checkPrompt', checkPrompt)
    .onRequest(function limitHeaderSize({ request }) {
      if (headerBytes(request.headers) > maxHeaderBytes) throw headersTooLarge(maxHeaderBytes)
    })
    .derive({ as: 'global' }, function openExchange({ request, path, set }) {
      const current = new Exchange(hub, { id: requestIdFor(request), method: request.method, path })
      set.headers['x-request-id'] = current.id
      return { exchange: current }
    })
    .onParse({ as: 'global' }, function parseJsonBody({ request }) {
      if (!hasBody(request)) return
      return readJsonBody(request, bodyLimitBytes, jsonLimits)
    })
    .onError({ as: 'global' }, function renderError({ error, code, path, request, set }) {
      const requestId = (set.headers['x-request-id'] as string | undefined) ?? requestIdFor(request)
      if (error instanceof ApiError) return errorResponse(error, path, requestId)
      // Elysia wraps what a parse hook throws in its own ParseError; ours says exactly why.
      if (code === 'PARSE' && (error as Error).cause instanceof ApiError)
        return errorResponse((error as Error).cause as ApiError, path, requestId)
      if (error instanceof ValidationError) return errorResponse(validationToApiError(error), path, requestId)
      if (code === 'NOT_FOUND')
        return errorResponse(
          new ApiError({
            status: 404,
            message: `No route for ${request.method} ${path}.`,
            code: 'not_found',
          }),
          path,
          requestId,
        )
      if (code === 'PARSE')
        return errorResponse(
          new ApiError({ status: 400, message: 'Request body could not be parsed.', code: 'invalid_json' }),
          path,
          requestId,
        )
      onUnexpectedError(error)
      return errorResponse(
        new ApiError({ status: 500, message: 'Internal error.', code: 'internal_error' }),
        path,
        requestId,
      )
    })
}
