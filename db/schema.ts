/**
 * The one pg-core schema both drivers (postgres.js and PGlite) run against. drizzle-kit
 * generates `db/migrations/` from this file, so every table the gateway persists is
 * declared here and nowhere else.
 */
import { sql } from 'drizzle-orm'
import {
  bigint,
  boolean,
  check,
  date,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uuid,
} from 'drizzle-orm/pg-core'

/**
 * Per-key limit overrides. Keys are tier-limit fields (`requests_per_minute`, ...) and the
 * cost plugin's `monthly_budget_usd`; each plugin reads the fields it owns, so the column stays open.
 */
export type KeyOverrides = Record<string, unknown>

export const apiKeys = pgTable(
  'api_keys',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: text('user_id').notNull(),
    name: text('name').notNull(),
    tier: text('tier').notNull(),
    /** Hex SHA-256 of the plaintext key; the plaintext itself is never stored. */
    keyHash: text('key_hash').notNull().unique(),
    /** The key's first characters, so people can tell their keys apart in listings. */
    prefix: text('prefix').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).defaultNow().notNull(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
    overrides: jsonb('overrides').$type<KeyOverrides>().notNull().default(sql`'{}'::jsonb`),
  },
  (table) => [index('api_keys_user_id_idx').on(table.userId)],
)

/** How a settled model request ended; the ledger stores it as text with this check. */
export type LedgerOutcome = 'ok' | 'error' | 'cancelled' | 'cached'

/**
 * The usage ledger: one row per settled model request, written in batches by the cost
 * plugin. `request_id` is the idempotency key, so a batch written twice (a retry after a
 * lost commit acknowledgement) inserts nothing twice. Reports never read this table: they
 * read `daily_usage`, which the same transaction keeps in step.
 */
export const usageEvents = pgTable(
  'usage_events',
  {
    /** The gateway's id for the request; unique, so a retried flush is a no-op. */
    requestId: text('request_id').primaryKey(),
    /** The caller's own `x-request-id`, when it sent one (callers may reuse theirs). */
    clientRequestId: text('client_request_id'),
    startedAt: timestamp('started_at', { withTimezone: true }).notNull(),
    keyId: text('key_id').notNull(),
    userId: text('user_id').notNull(),
    tier: text('tier').notNull(),
    route: text('route').notNull(),
    requestedModel: text('requested_model').notNull(),
    /** The model that served (after fallbacks): the one the cost is priced for. */
    servedModel: text('served_model').notNull(),
    provider: text('provider'),
    stream: boolean('stream').notNull(),
    status: integer('status').notNull(),
    outcome: text('outcome').$type<LedgerOutcome>().notNull(),
    errorCode: text('error_code'),
    cacheStatus: text('cache_status').notNull(),
    promptTokens: integer('prompt_tokens').notNull(),
    completionTokens: integer('completion_tokens').notNull(),
    cachedTokens: integer('cached_tokens').notNull(),
    costNanoUsd: bigint('cost_nano_usd', { mode: 'bigint' }).notNull(),
    /** For cache hits: what the upstream call would have cost. */
    savedNanoUsd: bigint('saved_nano_usd', { mode: 'bigint' }).notNull(),
    latencyMs: integer('latency_ms').notNull(),
    ttftMs: integer('ttft_ms'),
    attempts: integer('attempts').notNull(),
  },
  (table) => [
    // Retention and audits select by time; budget seeding sums one key's month.
    index('usage_events_started_at_idx').on(table.startedAt),
    index('usage_events_key_id_started_at_idx').on(table.keyId, table.startedAt),
    check('usage_events_outcome_check', sql`${table.outcome} in ('ok', 'error', 'cancelled', 'cached')`),
  ],
)

/**
 * Per user, UTC day and served model: the rollup every cost report reads. Upserted from
 * exactly the `usage_events` rows a flush inserted, in the same statement, so it always
 * equals the aggregate of the ledger. The primary key is the unique (user_id, day, model).
 */
export const dailyUsage = pgTable(
  'daily_usage',
  {
    userId: text('user_id').notNull(),
    day: date('day', { mode: 'string' }).notNull(),
    model: text('model').notNull(),
    requests: bigint('requests', { mode: 'number' }).notNull(),
    errors: bigint('errors', { mode: 'number' }).notNull(),
    cacheHits: bigint('cache_hits', { mode: 'number' }).notNull(),
    promptTokens: bigint('prompt_tokens', { mode: 'number' }).notNull(),
    completionTokens: bigint('completion_tokens', { mode: 'number' }).notNull(),
    costNanoUsd: bigint('cost_nano_usd', { mode: 'bigint' }).notNull(),
    savedNanoUsd: bigint('saved_nano_usd', { mode: 'bigint' }).notNull(),
  },
  (table) => [
    primaryKey({ name: 'daily_usage_user_id_day_model_pk', columns: [table.userId, table.day, table.model] }),
    // System-wide reports (per day, per model, top users) select a day range.
    index('daily_usage_day_idx').on(table.day),
  ],
)

/**
 * Monthly budgets per user (per-key budgets live in `api_keys.overrides.monthly_budget_usd`).
 * A user's budget covers every key of the user, including keys created later.
 */
export const userBudgets = pgTable('user_budgets', {
  userId: text('user_id').primaryKey(),
  monthlyBudgetNanoUsd: bigint('monthly_budget_nano_usd', { mode: 'bigint' }).notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).defaultNow().notNull(),
})
