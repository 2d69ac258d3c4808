/**
 * One structured line per request: identifiers, timings, the model and what it cost. The
 * fields are chosen, never copied from the request: prompts, completions and keys stay out
 * unless the operator turns on `logBodies` to debug, and then only bodies, never headers.
 */
import { type Exchange, formatUsd } from '../exchange'

/** The logger the application hands in (src/log.ts has this shape); plugins never import it. */
export interface RequestLogger {
  info(msg: string, fields: Record<string, unknown>): void
  debug(msg: string, fields: Record<string, unknown>): void
}

export interface RequestRecord {
  requestId: string | undefined
  traceId: string | undefined
  method: string
  route: string
  status: number
  latencyMs: number
  exchange: Exchange | undefined
  /** Only with `logBodies`: the parsed request body and the answer, when it was not a stream. */
  bodies?: { request: unknown; response: unknown }
}

const round = (ms: number) => Math.round(ms * 100) / 100

export function requestLogFields(record: RequestRecord): Record<string, unknown> {
  const { exchange } = record
  const fields: Record<string, unknown> = {
    request_id: record.requestId,
    trace_id: record.traceId,
    method: record.method,
    route: record.route,
    status: record.status,
    latency_ms: round(record.latencyMs),
  }
  if (exchange?.principal) fields.tier = exchange.principal.tier
  if (exchange?.requestedModel != null) {
    fields.model = exchange.requestedModel
    fields.served_model = exchange.servedModel
    fields.stream = exchange.stream
    fields.cache = exchange.cacheStatus
  }
  const settlement = exchange?.settlement
  if (exchange && settlement) {
    fields.outcome = settlement.outcome
    if (settlement.errorCode) fields.error_code = settlement.errorCode
    fields.prompt_tokens = exchange.usage.promptTokens
    fields.completion_tokens = exchange.usage.completionTokens
    fields.cached_tokens = exchange.usage.cachedTokens
    fields.cost_usd = formatUsd(exchange.costNanoUsd)
    if (exchange.savedNanoUsd > 0n) fields.saved_usd = formatUsd(exchange.savedNanoUsd)
    if (exchange.ttftMs !== null) fields.ttft_ms = round(exchange.ttftMs)
    fields.attempts = exchange.attempts
    if (exchange.fallbackSteps > 0) fields.fallback_steps = exchange.fallbackSteps
  }
  if (record.bodies) {
    fields.request_body = record.bodies.request
    fields.response_body = record.bodies.response
  }
  return fields
}
