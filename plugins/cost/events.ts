/**
 * What the ledger writes for one settled Exchange: a flat row, built once at settlement in
 * the snake_case shape the flush statement reads (`jsonb_to_recordset`), so a batch goes to
 * the database as one JSON parameter with no per-flush re-mapping. Money stays exact: nano-USD
 * travel as decimal strings, never as floats.
 */
import type { Exchange, Outcome } from '../exchange'

export interface EventRow {
  request_id: string
  client_request_id: string | null
  started_at: string
  key_id: string
  user_id: string
  tier: string
  route: string
  requested_model: string
  served_model: string
  provider: string | null
  stream: boolean
  status: number
  outcome: Outcome
  error_code: string | null
  cache_status: string
  prompt_tokens: number
  completion_tokens: number
  cached_tokens: number
  /** Integer nano-USD as a decimal string. */
  cost_nano_usd: string
  /** Integer nano-USD as a decimal string. */
  saved_nano_usd: string
  latency_ms: number
  ttft_ms: number | null
  attempts: number
}

/** The columns of `usage_events` in the order the flush statement lists them. */
export const eventColumns = [
  'request_id',
  'client_request_id',
  'started_at',
  'key_id',
  'user_id',
  'tier',
  'route',
  'requested_model',
  'served_model',
  'provider',
  'stream',
  'status',
  'outcome',
  'error_code',
  'cache_status',
  'prompt_tokens',
  'completion_tokens',
  'cached_tokens',
  'cost_nano_usd',
  'saved_nano_usd',
  'latency_ms',
  'ttft_ms',
  'attempts',
] as const satisfies ReadonlyArray<keyof EventRow>

/** Integer columns hold 32 bits; a clamp keeps one absurd value from poisoning a batch. */
const int32 = (value: number) => Math.min(2_147_483_647, Math.max(0, Math.round(value)))

/**
 * The row for a settled exchange, or null when there is nobody to charge (no principal).
 * `clientRequestId`: the exchange's id came from the caller's `x-request-id`. Callers may
 * reuse their ids, and the ledger's key must be unique per served request, so such a request
 * gets a fresh id here (once: a retried batch carries the same row) and keeps the caller's.
 */
export function eventRow(exchange: Exchange, clientRequestId: boolean): EventRow | null {
  const { principal, settlement, usage } = exchange
  if (!principal || !settlement) return null
  const ttft = exchange.ttftMs
  return {
    request_id: clientRequestId ? crypto.randomUUID() : exchange.id,
    client_request_id: clientRequestId ? exchange.id : null,
    started_at: exchange.startedAtDate.toISOString(),
    key_id: principal.keyId,
    user_id: principal.userId,
    tier: principal.tier,
    route: exchange.route || exchange.path,
    requested_model: exchange.requestedModel ?? '',
    served_model: exchange.servedModel ?? exchange.requestedModel ?? '',
    provider: exchange.provider,
    stream: exchange.stream,
    status: settlement.status,
    outcome: settlement.outcome,
    error_code: settlement.errorCode ?? null,
    cache_status: exchange.cacheStatus,
    prompt_tokens: int32(usage.promptTokens),
    completion_tokens: int32(usage.completionTokens),
    cached_tokens: int32(usage.cachedTokens),
    cost_nano_usd: exchange.costNanoUsd.toString(),
    saved_nano_usd: exchange.savedNanoUsd.toString(),
    latency_ms: int32(exchange.latencyMs),
    ttft_ms: ttft === null ? null : int32(ttft),
    attempts: int32(exchange.attempts),
  }
}
