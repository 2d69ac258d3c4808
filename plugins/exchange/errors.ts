/**
 * The client-facing error: one class that every plugin and route throws, rendered as the
 * OpenAI envelope on `/v1/*` and as RFC 9457 problem+json everywhere else. Nothing else
 * ever reaches a client, so no stack trace, credential or raw upstream body can leak.
 */

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'insufficient_quota'
  | 'server_error'
  | 'upstream_error'

export interface ApiErrorInit {
  status: number
  message: string
  type?: ErrorType
  code?: string | null
  param?: string | null
  headers?: Record<string, string>
}

const defaultTypeFor = (status: number): ErrorType =>
  status === 401
    ? 'authentication_error'
    : status === 403
      ? 'permission_error'
      : status === 404
        ? 'not_found_error'
        : status === 429
          ? 'rate_limit_error'
          : status >= 500
            ? 'server_error'
            : 'invalid_request_error'

export class ApiError extends Error {
  readonly status: number
  readonly type: ErrorType
  readonly code: string | null
  readonly param: string | null
  readonly headers: Record<string, string>

  constructor({ status, message, type, code = null, param = null, headers = {} }: ApiErrorInit) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.type = type ?? defaultTypeFor(status)
    this.code = code
    this.param = param
    this.headers = headers
  }
}

/** Longest `param` (and field name in a message) echoed back; key names come from clients. */
const maxParamLength = 200

/** A client-derived field path cut to a bounded length, keeping its end (the field itself). */
export function clipParam(path: string): string {
  return path.length <= maxParamLength ? path : `…${path.slice(-(maxParamLength - 1))}`
}

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null }
}

export function openAIErrorBody(error: ApiError): OpenAIErrorBody {
  return { error: { message: error.message, type: error.type, param: error.param, code: error.code } }
}

const reasonPhrases: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
}

/** RFC 9457 problem details, for everything outside the OpenAI surface. */
export function problemBody(error: ApiError, instance: string) {
  return {
    type: 'about:blank',
    title: reasonPhrases[error.status] ?? 'Error',
    status: error.status,
    detail: error.message,
    instance,
    ...(error.code ? { code: error.code } : {}),
    ...(error.param ? { param: error.param } : {}),
  }
}

/** Renders an ApiError for the surface the path belongs to. */
export function errorResponse(error: ApiError, path: string, requestId?: string): Response {
  const openAI = path.startsWith('/v1/') || path === '/v1'
  const headers = new Headers(error.headers)
  headers.set('content-type', openAI ? 'application/json' : 'application/problem+json')
  if (requestId) headers.set('x-request-id', requestId)
  const body = openAI ? openAIErrorBody(error) : problemBody(error, path)
  return new Response(JSON.stringify(body), { status: error.status, headers })
}
