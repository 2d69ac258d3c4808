/**
 * Opens the gateway's database: Postgres through postgres.js when a URL is given, else an
 * embedded PGlite persisted in a data folder, so the embedded default and the real stack
 * run the same drizzle queries. Migrations are applied at open on both, and opening fails
 * fast with a clear message instead of hanging on an unreachable server.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { type SQLWrapper, sql } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite'
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator'
import postgres from 'postgres'
import * as schema from './schema'

/** The query surface shared by both drivers: code written against it runs on either. */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>

export interface Database {
  kind: 'postgres' | 'pglite'
  db: Db
  /** Round trip of a trivial query in ms; rejects when the database does not answer in time. */
  ping(timeoutMs?: number): Promise<number>
  /** Waits for running queries (bounded), then releases connections or the embedded engine. */
  close(): Promise<void>
}

export interface OpenDatabaseOptions {
  /** Postgres connection URL; null opens PGlite in `dataDir`. */
  url: string | null
  /** Folder PGlite persists to; created when missing. Unused with a URL. */
  dataDir: string
  /**
   * Postgres connections per process. Auth is served from a cache and ledger writes are
   * batched, so the gateway needs few.
   * @default 10
   */
  poolSize?: number
  /**
   * How long opening may wait for Postgres to accept a connection, in ms.
   * @default 5000
   */
  connectTimeoutMs?: number
}

const migrationsFolder = join(import.meta.dir, 'migrations')

/**
 * Serialises migrations across instances that start together against one Postgres (a
 * scaled-out rollout): without it two of them race on the same CREATE TABLE.
 */
const migrationLockId = 0x7467_6d67

/**
 * Rows of a raw SQL query on either driver: `db.execute` answers postgres.js's row array
 * or PGlite's `{ rows }`. The query builder needs no such help; raw SQL does.
 */
export async function queryRows<T extends Record<string, unknown>>(db: Db, query: SQLWrapper): Promise<T[]> {
  const result: unknown = await db.execute<T>(query)
  return Array.isArray(result) ? result : (result as { rows: T[] }).rows
}

function withTimeout<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms)
  })
  return Promise.race([work, expired]).finally(() => clearTimeout(timer))
}

/** The URL with its password masked, for messages that reach logs. */
function redact(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparseable DATABASE_URL)'
  }
}

function pinger(db: Db): Database['ping'] {
  return async function ping(timeoutMs = 2_000) {
    const started = performance.now()
    await withTimeout(db.execute(sql`select 1`), timeoutMs, `database did not answer within ${timeoutMs} ms`)
    return performance.now() - started
  }
}

async function migrateWithLock(url: string, connectTimeoutMs: number): Promise<void> {
  // One connection, so the session-level advisory lock and the migrator's transaction share it.
  const client = postgres(url, {
    max: 1,
    connect_timeout: Math.ceil(connectTimeoutMs / 1000),
    onnotice: () => {},
  })
  try {
    await withTimeout(
      client`select pg_advisory_lock(${migrationLockId})`,
      connectTimeoutMs,
      `timed out after ${connectTimeoutMs} ms`,
    )
    await migratePostgres(drizzlePostgres({ client }), { migrationsFolder })
    await client`select pg_advisory_unlock(${migrationLockId})`
  } finally {
    await client.end({ timeout: 1 })
  }
}

async function openPostgres(url: string, poolSize: number, connectTimeoutMs: number): Promise<Database> {
  try {
    await migrateWithLock(url, connectTimeoutMs)
  } catch (error) {
    throw new Error(`Cannot open Postgres at ${redact(url)}: ${(error as Error).message}`, { cause: error })
  }
  const client = postgres(url, {
    max: poolSize,
    connect_timeout: Math.ceil(connectTimeoutMs / 1000),
    // Closing idle connections lets a restarted Postgres or a pooler rebalance them.
    idle_timeout: 30,
    // postgres.js pauses up to 20 s between reconnects after repeated failures (3^n / 100 s),
    // so a database back from an outage stayed unused for that long while queries queued
    // behind the pause. Its callers bound and space their own retries (key lookups, ledger
    // flushes), so the driver's pause is capped at 1 s.
    backoff: (retries: number) => Math.min(0.05 * 2 ** retries, 1),
    max_lifetime: 30 * 60,
    onnotice: () => {},
  })
  const db = drizzlePostgres({ client, schema })
  return {
    kind: 'postgres',
    db,
    ping: pinger(db),
    close: () => client.end({ timeout: 5 }),
  }
}

async function openPglite(dataDir: string): Promise<Database> {
  await mkdir(dataDir, { recursive: true })
  const client = await PGlite.create(dataDir)
  const db = drizzlePglite({ client, schema })
  try {
    await migratePglite(db, { migrationsFolder })
  } catch (error) {
    await client.close()
    throw new Error(`Cannot migrate PGlite in ${dataDir}: ${(error as Error).message}`, { cause: error })
  }
  return {
    kind: 'pglite',
    db,
    ping: pinger(db),
    close: () => client.close(),
  }
}

/** Opens and migrates the database; rejects with a message naming the target when it cannot. */
export function openDatabase({
  url,
  dataDir,
  poolSize = 10,
  connectTimeoutMs = 5_000,
}: OpenDatabaseOptions): Promise<Database> {
  return url ? openPostgres(url, poolSize, connectTimeoutMs) : openPglite(dataDir)
}
