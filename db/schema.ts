/**
 * The one pg-core schema both drivers (postgres.js and PGlite) run against. drizzle-kit
 * generates `db/migrations/` from this file, so every table the gateway persists is
 * declared here and nowhere else; later issues add the ledger tables below.
 */
import { sql } from 'drizzle-orm'
import { index, jsonb, pgTable, text, timestamp, uuid } from 'drizzle-orm/pg-core'

/**
 * Per-key limit overrides. Keys are tier-limit fields (`requests_per_minute`, ...) and,
 * later, budget fields; each plugin reads the fields it owns, so the column stays open.
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
