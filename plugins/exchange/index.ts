/**
 * The ground every plugin stands on: derives one Exchange per request, reads JSON bodies
 * within limits, and renders every error in the envelope its surface promises.
 */
import { Elysia, ValidationError } from 'elysia'
import { readJsonBody } from './body'
import { ApiError, errorResponse } from './errors'
import { Exchange, type SettlementHub } from './exchange'

export { isJsonContentType, readJsonBody, tooLarge } from './body'
export type { ErrorType, OpenAIErrorBody } from './errors'
export { ApiError, errorResponse, openAIErrorBody } from './errors'
export type {
  CacheStatus,
  Outcome,
  Principal,
  SettleListener,
  Settlement,
  SettlePhase,
  Usage,
} from './exchange'
export { Exchange, SettlementHub, settlePhases } from './exchange'
export type { Price } from './money'
export { costOf, formatUsd, freePrice, priceFromUsdPerMillion, usdToNano } from './money'

export interface ExchangeOptions {
  /** Settlement subscribers; every feature plugin subscribes to the same hub. */
  hub: SettlementHub
  /**
   * Largest request body accepted, in bytes.
   * @default 1048576
   */
  bodyLimitBytes?: number
  /**
   * Called with errors that are not ApiErrors (bugs, dependency faults) before the client
   * gets a generic 500; the client never sees their message.
   * @default console.error
   */
  onUnexpectedError?: (error: unknown, exchange: Exchange | undefined) => void
}

const requestIdPattern = /^[A-Za-z0-9._:-]{8,128}$/

/** Honours a well-formed incoming request id, else makes one. */
export function requestIdFor(request: Request): string {
  const incoming = request.headers.get('x-request-id')
  return incoming && requestIdPattern.test(incoming) ? incoming : crypto.randomUUID()
}

function hasBody(request: Request): boolean {
  if (request.method === 'GET' || request.method === 'HEAD') return false
  const length = request.headers.get('content-length')
  return length === null ? request.headers.has('transfer-encoding') : length !== '0'
}

/** Turns a validation failure into the OpenAI-style 400 with `param` naming the field. */
export function validationToApiError(error: ValidationError): ApiError {
  const first = error.valueError
  const param = first?.path ? first.path.replace(/^\//, '').replaceAll('/', '.') : null
  const where = param ? `'${param}'` : 'request'
  const message = first ? `Invalid ${where}: ${first.message}.` : 'Invalid request.'
  return new ApiError({ status: 400, message, param, code: param ? 'invalid_value' : 'invalid_request' })
}

export function exchange({
  hub,
  bodyLimitBytes = 1_048_576,
  onUnexpectedError = console.error,
}: ExchangeOptions) {
  return new Elysia({ name: 'tollgate/exchange', seed: { bodyLimitBytes } })
    .decorate('settlements', hub)
    .derive({ as: 'global' }, function openExchange({ request, path, set }) {
      const current = new Exchange(hub, { id: requestIdFor(request), method: request.method, path })
      set.headers['x-request-id'] = current.id
      return { exchange: current }
    })
    .onParse({ as: 'global' }, function parseJsonBody({ request }) {
      if (!hasBody(request)) return
      return readJsonBody(request, bodyLimitBytes)
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
      onUnexpectedError(error, undefined)
      return errorResponse(
        new ApiError({ status: 500, message: 'Internal error.', code: 'internal_error' }),
        path,
        requestId,
      )
    })
}
