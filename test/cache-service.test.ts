/**
 * The cache service driven directly, without HTTP: coalescing when the leader gives up
 * (admission denied) or fails, stale reads for the resilience layer, O(1) invalidation, and
 * the counters the metrics exporter reads.
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { cache } from '../plugins/cache'
import { Exchange, type Principal, SettlementHub } from '../plugins/exchange'
import { MemoryStore } from '../plugins/store'

const principal = (userId: string): Principal => ({ keyId: 'k', userId, tier: 'pro', overrides: {} })
const noDirectives = { noStore: false, noCache: false, maxAgeSeconds: null }
const body = (content: string) => ({ model: 'm', temperature: 0, messages: [{ role: 'user', content }] })
const completion = (content: string) => ({
  id: 'chatcmpl-1',
  object: 'chat.completion' as const,
  created: 1,
  model: 'm',
  choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
})

let now = Date.UTC(2030, 0, 1)
const hub = new SettlementHub()
const plugin = cache({ store: new MemoryStore(), hub, now: () => now, staleMs: 60_000 })
const service = plugin.decorator.cache
afterEach(() => {
  now += 1
})

function exchangeFor(userId = 'alice'): Exchange {
  const exchange = new Exchange(hub, {
    id: crypto.randomUUID(),
    method: 'POST',
    path: '/v1/chat/completions',
  })
  exchange.principal = principal(userId)
  exchange.usage = { promptTokens: 3, completionTokens: 2, cachedTokens: 0 }
  exchange.price = { input: 1_000_000_000n, output: 2_000_000_000n, cachedInput: 0n }
  return exchange
}

/** Runs a miss to completion: lookup, claim, record, settle as ok. */
async function store(content: string, userId = 'alice') {
  const exchange = exchangeFor(userId)
  const lookup = await service.responses.lookup(exchange, body(content), noDirectives)
  expect(await service.responses.claim(exchange, lookup, new AbortController().signal)).toBeNull()
  service.responses.record(exchange, completion(content))
  exchange.settle({ outcome: 'ok', status: 200 })
  await exchange.settled
}

async function lookupStatus(content: string, userId = 'alice') {
  const exchange = exchangeFor(userId)
  const lookup = await service.responses.lookup(exchange, body(content), noDirectives)
  await service.responses.claim(exchange, lookup, new AbortController().signal)
  service.responses.abandon(exchange)
  return exchange.cacheStatus
}

describe('coalescing', () => {
  test('followers share the leader answer and settle nothing of their own to store', async () => {
    const leader = exchangeFor()
    const leaderLookup = await service.responses.lookup(leader, body('shared'), noDirectives)
    const follower = exchangeFor()
    const followerLookup = await service.responses.lookup(follower, body('shared'), noDirectives)
    expect(followerLookup.flight).not.toBeNull()
    expect(service.stats().inFlight).toBe(1)
    expect(await service.responses.claim(leader, leaderLookup, new AbortController().signal)).toBeNull()
    const waiting = service.responses.claim(follower, followerLookup, new AbortController().signal)
    service.responses.record(leader, completion('shared answer'))
    leader.settle({ outcome: 'ok', status: 200 })
    const hit = await waiting
    expect(hit?.coalesced).toBe(true)
    expect(hit?.answer.completion().choices[0]?.message.content).toBe('shared answer')
    expect(follower.cacheStatus).toBe('HIT')
    await leader.settled
    expect(service.stats().inFlight).toBe(0)
  })

  test('a leader denied admission releases its followers at once: they go upstream themselves', async () => {
    const leader = exchangeFor()
    await service.responses.lookup(leader, body('denied'), noDirectives)
    const follower = exchangeFor()
    const followerLookup = await service.responses.lookup(follower, body('denied'), noDirectives)
    const waiting = service.responses.claim(follower, followerLookup, new AbortController().signal)
    service.responses.abandon(leader)
    expect(await waiting).toBeNull()
    expect(follower.cacheStatus).toBe('MISS')
    // The follower's own answer is stored.
    service.responses.record(follower, completion('own'))
    follower.settle({ outcome: 'ok', status: 200 })
    await follower.settled
    expect(await lookupStatus('denied')).toBe('HIT')
  })

  test('a failed leader releases its followers; a follower whose client left stops waiting', async () => {
    const leader = exchangeFor()
    const leaderLookup = await service.responses.lookup(leader, body('failing'), noDirectives)
    await service.responses.claim(leader, leaderLookup, new AbortController().signal)
    const follower = exchangeFor()
    const followerLookup = await service.responses.lookup(follower, body('failing'), noDirectives)
    const gone = new AbortController()
    const leaving = exchangeFor()
    const leavingLookup = await service.responses.lookup(leaving, body('failing'), noDirectives)
    const left = service.responses.claim(leaving, leavingLookup, gone.signal)
    gone.abort()
    expect(await left).toBeNull()
    const waiting = service.responses.claim(follower, followerLookup, new AbortController().signal)
    leader.settle({ outcome: 'error', status: 502, errorCode: 'upstream_error' })
    expect(await waiting).toBeNull()
    await leader.settled
    expect(service.stats().inFlight).toBe(0)
  })
})

describe('stale reads, invalidation, counters', () => {
  test('lookupStale serves an entry past its TTL within the staleness; lookup does not', async () => {
    await store('stale')
    now += 3_600_000 + 1_000
    expect(await lookupStatus('stale')).toBe('MISS')
    const exchange = exchangeFor()
    const stale = await service.responses.lookupStale(exchange, body('stale'), noDirectives)
    expect(stale?.ageSeconds).toBe(3601)
    expect(exchange.cacheStatus).toBe('STALE')
    now += 60_000
    expect(await service.responses.lookupStale(exchangeFor(), body('stale'), noDirectives)).toBeNull()
  })

  test('invalidating a user bumps only that namespace; invalidating all bumps the epoch', async () => {
    await store('inv', 'alice')
    await store('inv', 'bob')
    const invalidated = await service.invalidateUser('alice')
    expect(invalidated).toEqual({ userId: 'alice', namespace: 'u:alice', version: 1 })
    expect(await lookupStatus('inv', 'alice')).toBe('MISS')
    expect(await lookupStatus('inv', 'bob')).toBe('HIT')
    expect(await service.invalidateAll()).toBe(1)
    expect(await lookupStatus('inv', 'bob')).toBe('MISS')
  })

  test('stats count lookups by result, bytes stored and the cost saved', async () => {
    const before = service.stats()
    await store('counted')
    const exchange = exchangeFor()
    const lookup = await service.responses.lookup(exchange, body('counted'), noDirectives)
    const hit = await service.responses.claim(exchange, lookup, new AbortController().signal)
    exchange.usage = { ...hit!.answer.usage }
    exchange.settle({ outcome: 'cached', status: 200 })
    await exchange.settled
    const after = service.stats()
    expect(after.lookups.response.miss).toBe(before.lookups.response.miss + 1)
    expect(after.lookups.response.hit).toBe(before.lookups.response.hit + 1)
    expect(after.stored.response.entries).toBe(before.stored.response.entries + 1)
    expect(after.stored.response.bytes).toBeGreaterThan(before.stored.response.bytes)
    // 3 prompt tokens at $1/M and 2 completion tokens at $2/M.
    expect(after.savedNanoUsd - before.savedNanoUsd).toBe(7_000n)
  })
})
