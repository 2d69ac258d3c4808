/**
 * Databases for tests: the shared Postgres (required, never skipped; a missing server
 * fails with the command that starts it), a fresh throwaway database in it per test file so
 * runs repeat and never see each other's rows, and PGlite in a temporary folder.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { type Database, openDatabase } from '../../db/client'

export const POSTGRES_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
export const POSTGRES_START_COMMAND =
  'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start   (or: docker compose up -d postgres)'

const throwawayPrefix = 'tollgate_test_'

function adminClient(url = POSTGRES_URL) {
  return postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} })
}

/** The shared Postgres URL; throws (does not skip) with the command that starts it. */
export async function requirePostgres(): Promise<string> {
  const client = adminClient()
  try {
    await client`select 1`
    return POSTGRES_URL
  } catch (error) {
    throw new Error(
      `Postgres is not answering at ${POSTGRES_URL} (${(error as Error).message}). Start it with:\n  ${POSTGRES_START_COMMAND}`,
    )
  } finally {
    await client.end({ timeout: 1 })
  }
}

/** Whether the process that created a throwaway database (its pid is in the name) is gone. */
function orphaned(name: string): boolean {
  const pid = Number(name.slice(throwawayPrefix.length).split('_', 1)[0])
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return false
  } catch {
    return true
  }
}

export interface ThrowawayPostgres {
  url: string
  drop(): Promise<void>
}

/**
 * A new, empty database on the shared server. Databases left behind by runs that died
 * are dropped on the way, so the server does not fill up with them.
 */
export async function freshPostgresDatabase(): Promise<ThrowawayPostgres> {
  await requirePostgres()
  const name = `${throwawayPrefix}${process.pid}_${crypto.randomUUID().slice(0, 8)}`
  const client = adminClient()
  try {
    const existing = await client<{ datname: string }[]>`
      select datname from pg_database where datname like ${`${throwawayPrefix}%`}`
    for (const { datname } of existing.filter((row) => orphaned(row.datname))) {
      await client`drop database if exists ${client(datname)} with (force)`
    }
    await client`create database ${client(name)}`
  } finally {
    await client.end({ timeout: 1 })
  }
  const url = new URL(POSTGRES_URL)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    async drop() {
      const dropper = adminClient()
      try {
        await dropper`drop database if exists ${dropper(name)} with (force)`
      } finally {
        await dropper.end({ timeout: 1 })
      }
    },
  }
}

export interface TempDir {
  dataDir: string
  remove(): Promise<void>
}

/** An empty folder for PGlite to persist to. */
export async function tempPgliteDir(): Promise<TempDir> {
  const dataDir = await mkdtemp(join(tmpdir(), 'tollgate-pglite-'))
  return { dataDir, remove: () => rm(dataDir, { recursive: true, force: true }) }
}

export interface TestDatabase {
  /** Replace it after reopening the same target; cleanup closes whichever is here. */
  database: Database
  /** Where it lives, to open it again (a URL, or PGlite's folder). */
  target: { url: string | null; dataDir: string }
  /** Closes it and deletes everything it held. */
  cleanup(): Promise<void>
}

/** A migrated database of the given kind, empty but for the schema. */
export async function openTestDatabase(kind: Database['kind']): Promise<TestDatabase> {
  const place =
    kind === 'postgres'
      ? await freshPostgresDatabase().then((db) => ({
          url: db.url as string | null,
          dataDir: '',
          remove: db.drop,
        }))
      : await tempPgliteDir().then((dir) => ({ url: null, dataDir: dir.dataDir, remove: dir.remove }))
  const target = { url: place.url, dataDir: place.dataDir }
  const handle: TestDatabase = {
    database: await openDatabase(target),
    target,
    async cleanup() {
      await handle.database.close()
      await place.remove()
    },
  }
  return handle
}
