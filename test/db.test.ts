/**
 * Both database drivers run the same migrations and the same key queries: Postgres (a
 * throwaway database on the shared server) and PGlite (a temporary folder).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { eq, sql } from 'drizzle-orm'
import { openDatabase, queryRows } from '../db/client'
import { apiKeys } from '../db/schema'
import { createDevelopmentKey, hashKey, KeyStore } from '../plugins/auth'
import { freshPostgresDatabase, openTestDatabase, type TestDatabase } from './support/db'

/** Every migration drizzle-kit generated, each applied exactly once. */
const migrations = (
  (await Bun.file(new URL('../db/migrations/meta/_journal.json', import.meta.url)).json()) as {
    entries: unknown[]
  }
).entries.length

for (const kind of ['postgres', 'pglite'] as const) {
  describe(`database on ${kind}`, () => {
    let test_: TestDatabase
    let store: KeyStore

    beforeAll(async () => {
      test_ = await openTestDatabase(kind)
      store = new KeyStore(test_.database.db)
    })
    afterAll(() => test_?.cleanup())

    test('opens the right driver and pings', async () => {
      expect(test_.database.kind).toBe(kind)
      expect(await test_.database.ping()).toBeGreaterThanOrEqual(0)
    })

    test('migrations created api_keys with its columns and index', async () => {
      const columns = await queryRows<{ column_name: string }>(
        test_.database.db,
        sql`select column_name from information_schema.columns where table_name = 'api_keys' order by column_name`,
      )
      const names = columns.map((row) => row.column_name)
      expect(names).toEqual([
        'created_at',
        'id',
        'key_hash',
        'name',
        'overrides',
        'prefix',
        'revoked_at',
        'tier',
        'user_id',
      ])
      const indexes = await queryRows<{ indexname: string }>(
        test_.database.db,
        sql`select indexname from pg_indexes where tablename = 'api_keys'`,
      )
      expect(indexes.map((row) => row.indexname)).toContain('api_keys_user_id_idx')
    })

    test('the development key is created on the first start only', async () => {
      const key = await createDevelopmentKey(test_.database.db)
      expect(key).toMatch(/^tg-[A-Za-z0-9_-]{43}$/)
      expect(await createDevelopmentKey(test_.database.db)).toBeNull()
    })

    test('create stores only the hash and returns the plaintext once', async () => {
      const { record, key } = await store.create({ userId: 'alice', name: 'laptop', tier: 'free' })
      expect(key).toMatch(/^tg-[A-Za-z0-9_-]{43}$/)
      expect(record.prefix).toBe(key.slice(0, 12))
      expect(record).toMatchObject({
        userId: 'alice',
        name: 'laptop',
        tier: 'free',
        revokedAt: null,
        overrides: {},
      })
      expect(record.createdAt).toBeInstanceOf(Date)
      const [row] = await test_.database.db.select().from(apiKeys).where(eq(apiKeys.id, record.id))
      expect(row!.keyHash).toBe(await hashKey(key))
      expect(JSON.stringify(row)).not.toContain(key)
    })

    test('lookup by hash, get, list per user', async () => {
      const { record, key } = await store.create({
        userId: 'bob',
        name: 'ci',
        tier: 'pro',
        overrides: { requests_per_minute: 5 },
      })
      const second = await store.create({ userId: 'bob', name: 'phone', tier: 'free' })
      expect(await store.findByHash(await hashKey(key))).toEqual(record)
      expect((await store.findByHash(await hashKey(key)))?.overrides).toEqual({ requests_per_minute: 5 })
      expect(await store.get(record.id)).toEqual(record)
      expect(await store.get(crypto.randomUUID())).toBeNull()
      const bobs = await store.list({ userId: 'bob' })
      expect(bobs.map((key) => key.name).sort()).toEqual(['ci', 'phone'])
      expect(bobs[0]).toEqual(second.record)
      expect((await store.list()).length).toBeGreaterThanOrEqual(3)
      expect(bobs[0]).not.toHaveProperty('keyHash')
    })

    test('revoke hides the key from lookups and keeps the first revocation time', async () => {
      const { record, key } = await store.create({ userId: 'carol', name: 'old', tier: 'free' })
      const hash = await hashKey(key)
      const revoked = await store.revoke(record.id)
      expect(revoked?.revokedAt).toBeInstanceOf(Date)
      expect(revoked?.keyHash).toBe(hash)
      expect(await store.findByHash(hash)).toBeNull()
      await Bun.sleep(5)
      const again = await store.revoke(record.id)
      expect(again?.revokedAt?.getTime()).toBe(revoked!.revokedAt!.getTime())
      expect((await store.get(record.id))?.revokedAt?.getTime()).toBe(revoked!.revokedAt!.getTime())
      expect(await store.revoke(crypto.randomUUID())).toBeNull()
    })

    test('key hashes are unique', async () => {
      const { record } = await store.create({ userId: 'dave', name: 'a', tier: 'free' })
      const [row] = await test_.database.db.select().from(apiKeys).where(eq(apiKeys.id, record.id))
      const duplicate = test_.database.db
        .insert(apiKeys)
        .values({ userId: 'eve', name: 'b', tier: 'free', keyHash: row!.keyHash, prefix: 'tg-x' })
      await expect(duplicate.execute()).rejects.toThrow()
    })

    test('reopening applies nothing twice and keeps the data', async () => {
      const { record } = await store.create({ userId: 'frank', name: 'persisted', tier: 'free' })
      if (kind === 'pglite') await test_.database.close()
      const reopened = await openDatabase(test_.target)
      try {
        expect(
          await queryRows(reopened.db, sql`select count(*)::int as n from drizzle.__drizzle_migrations`),
        ).toEqual([{ n: migrations }])
        expect(await new KeyStore(reopened.db).get(record.id)).toEqual(record)
      } finally {
        if (kind === 'pglite') test_.database = reopened
        else await reopened.close()
      }
    })
  })
}

describe('opening Postgres', () => {
  test('instances starting together migrate one at a time', async () => {
    const throwaway = await freshPostgresDatabase()
    try {
      const opened = await Promise.all([1, 2, 3].map(() => openDatabase({ url: throwaway.url, dataDir: '' })))
      expect(
        await queryRows(opened[0]!.db, sql`select count(*)::int as n from drizzle.__drizzle_migrations`),
      ).toEqual([{ n: migrations }])
      await Promise.all(opened.map((database) => database.close()))
    } finally {
      await throwaway.drop()
    }
  })

  test('an unreachable server fails fast with a message naming it, password masked', async () => {
    const started = performance.now()
    const opening = openDatabase({ url: 'postgres://postgres:hunter2@127.0.0.1:1/test', dataDir: '' })
    await expect(opening).rejects.toThrow(
      /Cannot open Postgres at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/test/,
    )
    expect(performance.now() - started).toBeLessThan(5_000)
  })

  test('a server that never answers times out instead of hanging', async () => {
    // A listener that accepts and then says nothing, like a hung server.
    const silent = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
    try {
      const opening = openDatabase({
        url: `postgres://postgres@127.0.0.1:${silent.port}/test`,
        dataDir: '',
        connectTimeoutMs: 500,
      })
      await expect(opening).rejects.toThrow(/Cannot open Postgres/)
    } finally {
      silent.stop(true)
    }
  })
})
