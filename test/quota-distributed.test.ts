/**
 * Exactness under concurrency: a key with 10 requests per minute receives 50 at once and
 * exactly 10 pass, on one gateway, on three gateway processes sharing one Redis and one
 * Postgres database (with a global cap that admits exactly its number across all three),
 * and on a three-master Redis Cluster, where the user's and the global scripts run on
 * their own hash slots without a CROSSSLOT error.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import type { Reservation } from '../plugins/quota'
import { createStore, type Store } from '../plugins/store'
import { freshPostgresDatabase, requirePostgres } from './support/db'
import { eventually, type Gateway, startGateway } from './support/gateway'
import { type GatewayProcess, startGatewayProcess } from './support/process'
import {
  burst,
  chat,
  countStatuses,
  noLimits,
  sharedRedisStore,
  storeReady,
  uniqueUser,
} from './support/quota'
import { startRedisCluster, startRedisServer } from './support/redis'

const file = {
  tiers: { tiny: { ...noLimits, requests_per_minute: 10 }, unlimited: noLimits },
  global: { concurrent: null, requests_per_hour: 25, cost_per_day_usd: null },
}

const cleanups: Array<() => Promise<unknown>> = []
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined)
})

type Result = Awaited<ReturnType<typeof burst>>[number]
const minuteDenial = '10 requests per minute for tier tiny'
const globalDenial = '25 requests per hour for the gateway'

/**
 * A request denied by both its user's window and the global cap names whichever frees last,
 * so a denial may carry either message; every denial carries one of `denials`.
 */
function expectExactly(results: Result[], admitted: number, denials: string[]) {
  expect(countStatuses(results)).toEqual({ 200: admitted, 429: results.length - admitted })
  for (const denied of results.filter((result) => result.status === 429)) {
    expect(Number(denied.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(denials.some((denial) => denied.body.includes(denial))).toBe(true)
  }
}

/**
 * One request through every instance, then the global window cleared. The first call of a
 * script on a Redis that has not seen it fails NOSCRIPT and is resent as EVAL with the whole
 * script; those large writes let another instance's commands in between a request's user
 * and global scripts, where a transient global hold can turn a user-admitted request away
 * (under-admission, never over-admission). Exactness is a property of the warm path.
 */
async function warmUp(store: Store, bases: string[], createKey: (user: string) => Promise<string>) {
  const key = await createKey(uniqueUser('warm'))
  for (const base of bases) expect((await chat(base, key)).status).toBe(200)
  expect(await store.del('{global}:q')).toBe(1)
}

/** Every admitted request was decided on the store: a script error would have fallen back. */
async function expectDecidedOnStore(gateway: Gateway, count: number) {
  await eventually(() => gateway.settled.length >= count)
  for (const exchange of gateway.settled)
    expect((exchange.notes.get('quota') as Reservation | undefined)?.backend).toBe('store')
}

describe('exactness', () => {
  test('one gateway: 50 concurrent requests on 10/min, exactly 10 pass', async () => {
    const store = await sharedRedisStore('quota-exact')
    const gateway = await startGateway({ env: { DATABASE_URL: await requirePostgres() }, file, store })
    cleanups.push(() => gateway.stop())
    await warmUp(store, [gateway.url], (user) => gateway.createKey(user, 'unlimited'))
    const key = await gateway.createKey(uniqueUser('exact'), 'tiny')
    const results = await burst(50, () => chat(gateway.url, key))
    expectExactly(results, 10, [minuteDenial, globalDenial])
    // Denied by the minute window alone, the wait is GCRA's: one interval (6 s) at most.
    for (const denied of results.filter((result) => result.body.includes(minuteDenial)))
      expect(Number(denied.headers.get('retry-after'))).toBeLessThanOrEqual(6)
    await expectDecidedOnStore(gateway, 11)
  })

  test('three gateway processes on one Redis and one Postgres: per-key limit and global cap hold exactly', async () => {
    const redis = await startRedisServer()
    cleanups.push(() => redis.kill())
    const database = await freshPostgresDatabase()
    cleanups.push(() => database.drop())
    const env = { REDIS_URL: redis.url, DATABASE_URL: database.url }
    const instances: GatewayProcess[] = await Promise.all(
      [1, 2, 3].map(() => startGatewayProcess({ env, file })),
    )
    for (const instance of instances) cleanups.push(() => instance.stop())
    const spread = (i: number) => instances[i % 3]!.url
    const store = createStore({ url: redis.url })
    cleanups.push(() => store.close())
    await storeReady(store)
    const createKey = async (user: string, tier: string) => (await instances[0]!.createKey(user, tier)).key
    await warmUp(
      store,
      instances.map((instance) => instance.url),
      (user) => createKey(user, 'unlimited'),
    )

    const tiny = await createKey(uniqueUser('tiny'), 'tiny')
    expectExactly(await burst(50, (i) => chat(spread(i), tiny)), 10, [minuteDenial, globalDenial])

    // The global window saw those 10; start it afresh so the cap is counted from zero.
    expect(await store.del('{global}:q')).toBe(1)
    const keys = await Promise.all([0, 1, 2, 3, 4].map(() => createKey(uniqueUser('many'), 'unlimited')))
    const results = await burst(60, (i) => chat(spread(i), keys[i % keys.length]!))
    expectExactly(results, 25, [globalDenial])
  })

  test('Redis Cluster: the same exactness, both scopes on their own slots, no CROSSSLOT', async () => {
    const cluster = await startRedisCluster()
    cleanups.push(() => cluster.stop())
    const gateway = await startGateway({
      env: { REDIS_CLUSTER_NODES: cluster.nodes, DATABASE_URL: await requirePostgres() },
      file,
    })
    cleanups.push(() => gateway.stop())
    await storeReady(gateway.runtime.store)
    await warmUp(gateway.runtime.store, [gateway.url], (user) => gateway.createKey(user, 'unlimited'))
    const key = await gateway.createKey(uniqueUser('cluster'), 'tiny')
    expectExactly(await burst(50, () => chat(gateway.url, key)), 10, [minuteDenial, globalDenial])
    const others = await Promise.all([0, 1, 2].map(() => gateway.createKey(uniqueUser('c'), 'unlimited')))
    // 10 of the global 25 are used by now: 15 more pass, from any user.
    expectExactly(await burst(40, (i) => chat(gateway.url, others[i % 3]!)), 15, [globalDenial])
    await expectDecidedOnStore(gateway, 26)
  })
})
