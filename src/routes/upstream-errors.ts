/**
 * Maps typed upstream failures to what the client sees. The upstream's own body never
 * passes through (it can carry credentials, internal hostnames or another tenant's data):
 * the client gets a status that says whose fault it was and the upstream's error code.
 */
import { ApiError, type Settlement } from '../../plugins/exchange'
import { UpstreamError } from '../upstream/provider'

/** How a model request settles when its client went away before the answer was complete. */
export const clientDisconnected: Settlement = Object.freeze({
  outcome: 'cancelled',
  status: 499,
  errorCode: 'client_disconnected',
})

/** How a model request settles when it failed with `error`: as the client is told. */
export function failedWith(error: ApiError): Settlement {
  return { outcome: 'error', status: error.status, errorCode: error.code ?? 'upstream_error' }
}

export function upstreamToApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error
  if (!(error instanceof UpstreamError)) {
    return new ApiError({ status: 502, message: 'The upstream call failed.', code: 'upstream_error' })
  }
  const retryAfter =
    error.retryAfterMs === null ? undefined : String(Math.max(1, Math.ceil(error.retryAfterMs / 1000)))
  const headers: Record<string, string> = retryAfter ? { 'retry-after': retryAfter } : {}
  switch (error.kind) {
    case 'timeout':
      return new ApiError({
        status: 504,
        message: 'The upstream did not answer in time.',
        code: 'upstream_timeout',
      })
    case 'connection':
    case 'protocol':
      return new ApiError({
        status: 502,
        message: `The upstream connection failed (${error.kind}).`,
        type: 'upstream_error',
        code: 'upstream_error',
      })
    case 'aborted':
      return new ApiError({ status: 499, message: 'The request was cancelled.', code: 'cancelled' })
    case 'http':
      break
  }
  if (error.status === 429) {
    return new ApiError({
      status: 429,
      message: 'The upstream provider is rate limiting requests; retry later.',
      code: 'upstream_rate_limited',
      headers,
    })
  }
  if (error.status === 401 || error.status === 403) {
    return new ApiError({
      status: 502,
      message: 'The gateway could not authenticate with the upstream provider.',
      type: 'upstream_error',
      code: 'upstream_auth_failed',
    })
  }
  if (error.status >= 400 && error.status < 500) {
    return new ApiError({
      status: error.status === 404 ? 400 : error.status,
      message: `The upstream rejected the request (${error.status}${error.upstreamCode ? `, ${error.upstreamCode}` : ''}).`,
      code: error.upstreamCode ?? 'upstream_rejected',
    })
  }
  return new ApiError({
    status: 502,
    message: `The upstream failed (${error.status}).`,
    type: 'upstream_error',
    code: 'upstream_error',
    headers,
  })
}
