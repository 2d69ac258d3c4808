/**
 * The one statement a flush runs. A single statement is a single transaction, so the events
 * and the rollups they feed commit together or not at all. The batch travels as one JSON
 * parameter (any batch size, one prepared statement, both drivers). Events are inserted
 * idempotently on `request_id`, and `daily_usage` is upserted from the rows that insert
 * RETURNs, i.e. only those actually inserted: writing the same batch twice (a retry after a
 * lost commit acknowledgement) adds nothing the second time.
 */
import { sql } from 'drizzle-orm'
import { type Db, queryRows } from '../../db/client'
import { type EventRow, eventColumns } from './events'

/** Writes a batch; resolves with how many events were new. Rejects when nothing was written. */
export type LedgerSink = (rows: readonly EventRow[]) => Promise<{ inserted: number }>

const recordType = sql.raw(
  [
    'request_id text',
    'client_request_id text',
    'started_at timestamptz',
    'key_id text',
    'user_id text',
    'tier text',
    'route text',
    'requested_model text',
    'served_model text',
    'provider text',
    'stream boolean',
    'status integer',
    'outcome text',
    'error_code text',
    'cache_status text',
    'prompt_tokens integer',
    'completion_tokens integer',
    'cached_tokens integer',
    'cost_nano_usd bigint',
    'saved_nano_usd bigint',
    'latency_ms integer',
    'ttft_ms integer',
    'attempts integer',
  ].join(', '),
)
const columns = sql.raw(eventColumns.join(', '))

/** Builds the sink that writes to `usage_events` and `daily_usage` through `db`. */
export function postgresSink(db: Db): LedgerSink {
  return async function writeBatch(rows) {
    if (rows.length === 0) return { inserted: 0 }
    // Rollup rows are upserted in key order, so two instances flushing overlapping users
    // lock them in the same order and cannot deadlock each other.
    const [result] = await queryRows<{ inserted: number }>(
      db,
      sql`
      with batch as (
        select * from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as x(${recordType})
      ), inserted as (
        insert into usage_events (${columns})
        select ${columns} from batch
        on conflict (request_id) do nothing
        returning user_id, started_at, served_model, outcome, prompt_tokens, completion_tokens,
          cost_nano_usd, saved_nano_usd
      ), rolled as (
        insert into daily_usage as d (user_id, day, model, requests, errors, cache_hits,
          prompt_tokens, completion_tokens, cost_nano_usd, saved_nano_usd)
        select user_id, (started_at at time zone 'UTC')::date, served_model, count(*),
          count(*) filter (where outcome = 'error'), count(*) filter (where outcome = 'cached'),
          sum(prompt_tokens), sum(completion_tokens), sum(cost_nano_usd), sum(saved_nano_usd)
        from inserted
        group by 1, 2, 3
        order by 1, 2, 3
        on conflict (user_id, day, model) do update set
          requests = d.requests + excluded.requests,
          errors = d.errors + excluded.errors,
          cache_hits = d.cache_hits + excluded.cache_hits,
          prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
          completion_tokens = d.completion_tokens + excluded.completion_tokens,
          cost_nano_usd = d.cost_nano_usd + excluded.cost_nano_usd,
          saved_nano_usd = d.saved_nano_usd + excluded.saved_nano_usd
        returning 1
      )
      select (select count(*) from inserted)::int as inserted, (select count(*) from rolled)::int as rollups`,
    )
    return { inserted: Number(result?.inserted ?? 0) }
  }
}
