/**
 * Helpers shared by the quota tests: a clock the tests move by hand (quota scripts take
 * it as ARGV instead of Redis TIME), unique user ids so runs never meet on the shared
 * Redis, keys created with their id, chat requests, and tallies of a burst's answers.
 */
import type { TierLimits } from '../../plugins/quota'
import { createStore, RedisStore, type Store } from '../../plugins/store'
import { adminKey } from './gateway'
import { requireRedis, testKeyPrefix } from './redis'

/** Noon UTC on a day far from any real clock, so nothing depends on when the test runs. */
export const clockStart = Date.UTC(2031, 0, 15, 12)

export interface ManualClock {
  now: () => number
  advance(ms: number): void
  set(ms: number): void
}

export function manualClock(start = clockStart): ManualClock {
  let current = start
  return {
    now: () => current,
    advance(ms) {
      current += ms
    },
    set(ms) {
      current = ms
    },
  }
}

export const dayMs = 86_400_000

/** A tier with every limit off: the base a test spreads its one limit under test over. */
export const noLimits: Readonly<TierLimits> = Object.freeze({
  requests_per_minute: null,
  requests_per_hour: null,
  requests_per_day: null,
  tokens_per_day: null,
  cost_per_day_usd: null,
  concurrent: null,
})

/** The next UTC midnight strictly after `ms`. */
export function nextMidnight(ms: number): number {
  return (Math.floor(ms / dayMs) + 1) * dayMs
}

export function uniqueUser(label: string): string {
  return `${label}-${crypto.randomUUID().slice(0, 8)}`
}

export interface CreatedKey {
  id: string
  key: string
}

/** Creates a key through `base`'s admin API and returns its id with the plaintext. */
export async function createKeyAt(base: string, user: string, tier: string): Promise<CreatedKey> {
  const response = await fetch(`${base}/admin/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: user, name: 'test', tier }),
  })
  if (response.status !== 201)
    throw new Error(`key creation failed: ${response.status} ${await response.text()}`)
  return (await response.json()) as CreatedKey
}

export interface ChatOptions {
  model?: string
  content?: string
  max_tokens?: number
  stream?: boolean
  headers?: Record<string, string>
  signal?: AbortSignal
}

export function chat(base: string, key: string, options: ChatOptions = {}): Promise<Response> {
  const { model = 'sim-1', content = 'Hello there', headers = {}, signal, ...rest } = options
  return fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }], ...rest }),
    signal,
  })
}

/** Fires `count` requests at once (none waits for another) and reads every body. */
export async function burst(count: number, send: (i: number) => Promise<Response>) {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const response = await send(i)
      return { status: response.status, headers: response.headers, body: await response.text() }
    }),
  )
}

export function countStatuses(results: Array<{ status: number }>): Record<number, number> {
  const counts: Record<number, number> = {}
  for (const { status } of results) counts[status] = (counts[status] ?? 0) + 1
  return counts
}

/** Waits until a Redis store is connected, so the first decision is Redis', not the fallback's. */
export async function storeReady(store: Store): Promise<void> {
  if (store instanceof RedisStore && !(await store.waitUntilAvailable(10_000)))
    throw new Error('Redis store did not become available')
}

/** A store on the shared Redis under a key prefix of its own (`testKeyPrefix(label)`), ready. */
export async function sharedRedisStore(label: string): Promise<Store> {
  const store = createStore({ url: await requireRedis(), keyPrefix: testKeyPrefix(label) })
  await storeReady(store)
  return store
}
