/**
 * Bounded cardinality: requests from 1,000 distinct users, each with its own key, prompt,
 * request id, `user` field, an unknown model name and a path no route matches, leave exactly
 * as many series in `/metrics` as the first 50 users did, and no label value anywhere holds
 * a user id, a key, a prompt or a path the client made up.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { requirePostgres } from './support/db'
import { parseExposition } from './support/exposition'
import { adminKey, type Gateway, startGateway } from './support/gateway'

const tiers = ['free', 'basic', 'pro', 'enterprise']
const concurrency = 25
let gateway: Gateway
const keys: string[] = []
const userIds: string[] = []

beforeAll(async () => {
  gateway = await startGateway({ env: { DATABASE_URL: await requirePostgres() } })
})

afterAll(async () => {
  await gateway?.stop()
})

async function actAs(index: number): Promise<void> {
  const userId = `user-${index}-${crypto.randomUUID().slice(0, 8)}`
  userIds.push(userId)
  const key = await gateway.createKey(userId, tiers[index % tiers.length])
  keys.push(key)
  const headers = {
    authorization: `Bearer ${key}`,
    'content-type': 'application/json',
    'x-request-id': `client-request-${userId}`,
  }
  const chat = (model: string) =>
    fetch(`${gateway.url}/v1/chat/completions?from=${userId}`, {
      method: 'POST',
      headers,
      body: JSON.stringify({
        model,
        user: userId,
        messages: [{ role: 'user', content: `hello from ${userId}` }],
      }),
    }).then((response) => response.text())
  await Promise.all([
    chat('sim-1'),
    chat(`model-of-${userId}`),
    fetch(`${gateway.url}/v1/${userId}`, { headers }).then((response) => response.text()),
    fetch(`${gateway.url}/v1/usage`, { headers }).then((response) => response.text()),
  ])
}

async function actAsUsers(from: number, to: number): Promise<void> {
  let next = from
  const worker = async () => {
    while (next < to) await actAs(next++)
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  await Promise.all(gateway.settled.map((exchange) => exchange.settled))
  await Bun.sleep(50)
}

/** Every gateway series (process metrics vary by themselves and are left out). */
async function gatewaySeries(): Promise<string[]> {
  const families = parseExposition(await (await fetch(`${gateway.url}/metrics`)).text())
  return [...families.values()]
    .filter((family) => family.name.startsWith('tollgate_'))
    .flatMap((family) => family.samples.map((sample) => `${sample.name}${JSON.stringify(sample.labels)}`))
}

test('the series count after 1,000 users is the count after 50, and no label names anyone', async () => {
  await actAsUsers(0, 50)
  // The first scrape adds the series of `/metrics` itself.
  await gatewaySeries()
  const first = await gatewaySeries()
  await actAsUsers(50, 1000)
  const after = await gatewaySeries()
  expect(userIds).toHaveLength(1000)
  expect(after.length).toBe(first.length)
  expect(new Set(after)).toEqual(new Set(first))
  expect(after.length).toBeLessThan(400)

  const labelValues = new Set(
    after.flatMap((series) => Object.values(JSON.parse(series.slice(series.indexOf('{'))))),
  )
  for (const value of labelValues as Set<string>) {
    expect(value).not.toMatch(/user-\d+|client-request|hello|tg-|model-of/)
    expect(value).not.toBe(adminKey)
  }
  expect(labelValues).toContain('unmatched')
  expect(labelValues).toContain('other')
}, 120_000)
