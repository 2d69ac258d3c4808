/**
 * The key lookup cache when its database fails or goes silent, with an injected clock and a
 * scripted loader: last known entries stand in for a bounded stale period, a key with
 * nothing to fall back on fails within the lookup timeout, reads neither pile up nor repeat
 * during the backoff, and the first answer after the outage replaces what was served stale.
 */
import { describe, expect, test } from 'bun:test'
import { KeyCache, LookupUnavailableError } from '../plugins/auth/key-cache'

const ttlMs = 5_000
const staleMs = 60_000
const backoffMs = 1_000
const lookupTimeoutMs = 40

type Value = { id: string }

/** A loader the test scripts: answer from `table`, fail, or never answer. */
function scripted() {
  const state = {
    mode: 'answer' as 'answer' | 'fail' | 'hang',
    table: new Map<string, Value>(),
    loads: 0,
    errors: 0,
  }
  const load = async (hash: string): Promise<Value | null> => {
    state.loads++
    if (state.mode === 'fail') throw new Error('connect ECONNREFUSED')
    if (state.mode === 'hang') return new Promise<never>(() => {})
    return state.table.get(hash) ?? null
  }
  return { state, load }
}

function setup(options: { staleMs?: number } = {}) {
  let clock = 1_000_000
  const { state, load } = scripted()
  const cache = new KeyCache<Value>(load, {
    ttlMs,
    negativeTtlMs: 1_000,
    lookupTimeoutMs,
    staleMs,
    failureBackoffMs: backoffMs,
    now: () => clock,
    onError: () => state.errors++,
    ...options,
  })
  return {
    cache,
    state,
    advance(ms: number) {
      clock += ms
    },
  }
}

async function refusal(lookup: Promise<unknown>): Promise<LookupUnavailableError> {
  const error = await lookup.then(
    () => null,
    (reason: unknown) => reason,
  )
  expect(error).toBeInstanceOf(LookupUnavailableError)
  return error as LookupUnavailableError
}

describe('the key cache while its database is unreachable', () => {
  test('a known key and a known-unknown key answer from their last entry through the stale period', async () => {
    const { cache, state, advance } = setup()
    state.table.set('live', { id: 'live' })
    expect(await cache.get('live')).toEqual({ id: 'live' })
    expect(await cache.get('gone')).toBeNull()
    state.mode = 'fail'
    advance(ttlMs)
    expect(await cache.get('live')).toEqual({ id: 'live' })
    expect(await cache.get('gone')).toBeNull()
    advance(staleMs - 1)
    expect(await cache.get('live')).toEqual({ id: 'live' })
    advance(1)
    const late = await refusal(cache.get('live'))
    expect(late.retryAfterMs).toBeGreaterThan(0)
    expect(late.retryAfterMs).toBeLessThanOrEqual(backoffMs)
  })

  test('staleMs 0: an expired key fails as soon as the database does', async () => {
    const { cache, state, advance } = setup({ staleMs: 0 })
    state.table.set('live', { id: 'live' })
    await cache.get('live')
    state.mode = 'fail'
    advance(ttlMs)
    await refusal(cache.get('live'))
  })

  test('a silent database: lookups give up after the timeout, share one read, and send no more during the backoff', async () => {
    const { cache, state, advance } = setup()
    state.table.set('live', { id: 'live' })
    await cache.get('live')
    state.mode = 'hang'
    advance(ttlMs)
    const started = performance.now()
    const answers = await Promise.allSettled([cache.get('live'), cache.get('new'), cache.get('new')])
    expect(performance.now() - started).toBeLessThan(lookupTimeoutMs + 200)
    expect(answers[0]).toEqual({ status: 'fulfilled', value: { id: 'live' } })
    expect(answers.slice(1).map((answer) => answer.status)).toEqual(['rejected', 'rejected'])
    // The first load cached 'live'; then one stuck read for each key.
    expect(state.loads).toBe(3)
    expect(state.errors).toBe(2)

    // Within the backoff: no read at all, an answer at once.
    const quick = performance.now()
    expect(await cache.get('live')).toEqual({ id: 'live' })
    await refusal(cache.get('new'))
    await refusal(cache.get('another'))
    expect(performance.now() - quick).toBeLessThan(lookupTimeoutMs)
    expect(state.loads).toBe(3)

    // After it, a key whose read is still stuck waits on that read again instead of adding one.
    advance(backoffMs)
    await refusal(cache.get('new'))
    expect(state.loads).toBe(3)
  })

  test('background refreshes: one per key, none during the backoff', async () => {
    const { cache, state, advance } = setup()
    for (const id of ['a', 'b']) state.table.set(id, { id })
    await cache.get('a')
    await cache.get('b')
    state.mode = 'fail'
    advance(ttlMs * 0.8)
    for (let i = 0; i < 5; i++) expect(await cache.get('a')).toEqual({ id: 'a' })
    await Bun.sleep(1)
    expect(state.loads).toBe(3)
    expect(await cache.get('b')).toEqual({ id: 'b' })
    expect(state.loads).toBe(3)
  })

  test('throttled addresses still see stale entries while the database is out, and only then', async () => {
    const { cache, state, advance } = setup()
    state.table.set('live', { id: 'live' })
    await cache.get('live')
    advance(ttlMs)
    expect(cache.peek('live')).toBeNull()
    state.mode = 'fail'
    await cache.get('live')
    expect(cache.peek('live')).toEqual({ id: 'live' })
  })

  test('the first answer after the outage wins: a key revoked meanwhile is refused', async () => {
    const { cache, state, advance } = setup()
    state.table.set('doomed', { id: 'doomed' })
    await cache.get('doomed')
    state.mode = 'fail'
    advance(ttlMs)
    expect(await cache.get('doomed')).toEqual({ id: 'doomed' })
    state.table.delete('doomed')
    state.mode = 'answer'
    advance(backoffMs - 1)
    expect(await cache.get('doomed')).toEqual({ id: 'doomed' })
    advance(1)
    expect(await cache.get('doomed')).toBeNull()
    state.mode = 'fail'
    advance(1_000)
    // Now the last known answer is "no such key", and that is what stands in.
    expect(await cache.get('doomed')).toBeNull()
  })
})
