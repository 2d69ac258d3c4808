/**
 * The cache's pure parts: canonical keys, Cache-Control, the entry codec, stream assembly
 * and replay, token apportioning, and the memory store's byte-bounded LRU.
 */
import { describe, expect, test } from 'bun:test'
import { StreamAssembler } from '../plugins/cache/assemble'
import { apportion } from '../plugins/cache/embedding-cache'
import {
  decodeHeader,
  encodeEntry,
  payloadOf,
  rejectEntry,
  vectorBytes,
  vectorOf,
} from '../plugins/cache/entry'
import { canonicalJson, embeddingKeys, responseKey } from '../plugins/cache/key'
import { isDeterministic, Policies, parseCacheControl } from '../plugins/cache/policy'
import { replayFrames } from '../plugins/cache/replay'
import type { Chunk } from '../plugins/cache/wire'
import { MemoryStore } from '../plugins/store'

describe('cache keys', () => {
  test('canonical JSON sorts keys at every depth and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: undefined } })).toBe(
      '{"a":{"d":[1,{"x":1,"y":2}]},"b":1}',
    )
    expect(canonicalJson({ a: null })).not.toBe(canonicalJson({}))
  })

  test('stream, stream_options and user are not keyed; every other field and the namespace are', () => {
    const body = { model: 'm', messages: [{ role: 'user', content: 'hi' }], temperature: 0 }
    const key = responseKey('u:a', body)
    expect(
      responseKey('u:a', { ...body, stream: true, stream_options: { include_usage: true }, user: 'x' }),
    ).toBe(key)
    expect(responseKey('u:a', { temperature: 0, messages: body.messages, model: 'm' })).toBe(key)
    expect(responseKey('u:b', body)).not.toBe(key)
    for (const change of [{ model: 'n' }, { seed: 1 }, { max_tokens: 5 }, { tools: [] }, { extra: 1 }])
      expect(responseKey('u:a', { ...body, ...change })).not.toBe(key)
    expect(key).toMatch(/^cache:r:[0-9a-f]{64}$/)
  })

  test('embedding keys: one per input, over model and keyed fields, not the encoding', () => {
    const [a, b, a2] = embeddingKeys('u:a', { model: 'e', input: 'ignored' }, ['x', 'y', 'x'])
    expect(a).toBe(a2!)
    expect(a).not.toBe(b!)
    expect(embeddingKeys('u:a', { model: 'e', encoding_format: 'base64' }, ['x'])[0]).toBe(a!)
    expect(embeddingKeys('u:a', { model: 'e', dimensions: 8 }, ['x'])[0]).not.toBe(a!)
    expect(embeddingKeys('u:a', { model: 'e' }, [[1, 2]])[0]).not.toBe(
      embeddingKeys('u:a', { model: 'e' }, ['[1,2]'])[0],
    )
  })
})

describe('cache policy', () => {
  test('Cache-Control directives, case-insensitive; bad max-age ignored; smallest wins', () => {
    expect(parseCacheControl(null)).toEqual({ noStore: false, noCache: false, maxAgeSeconds: null })
    expect(parseCacheControl('No-Store')).toMatchObject({ noStore: true })
    expect(parseCacheControl('no-cache, max-age=30')).toEqual({
      noStore: false,
      noCache: true,
      maxAgeSeconds: 30,
    })
    expect(parseCacheControl('max-age="10", max-age=5').maxAgeSeconds).toBe(5)
    expect(parseCacheControl('max-age=-1, max-age=abc').maxAgeSeconds).toBeNull()
  })

  test('deterministic means temperature 0 or a seed', () => {
    expect(isDeterministic({ model: 'm', temperature: 0 })).toBe(true)
    expect(isDeterministic({ model: 'm', seed: 7, temperature: 1 })).toBe(true)
    expect(isDeterministic({ model: 'm' })).toBe(false)
    expect(isDeterministic({ model: 'm', temperature: 0.2, seed: null })).toBe(false)
  })

  test('a model rule overrides only the fields it sets', () => {
    const policies = new Policies(
      {
        response: { mode: 'deterministic', ttlMs: 1000, namespace: 'user' },
        embedding: { mode: 'always', ttlMs: 2000, namespace: 'user' },
      },
      { m: { namespace: 'shared', ttlMs: undefined } },
    )
    expect(policies.rule('response', 'm')).toEqual({
      mode: 'deterministic',
      ttlMs: 1000,
      namespace: 'shared',
    })
    expect(policies.rule('embedding', 'other').ttlMs).toBe(2000)
  })
})

describe('entry codec', () => {
  const header = {
    kind: 'embedding' as const,
    storedAt: 1_700_000_000_123,
    ttlMs: 60_000,
    versions: { epoch: 2, namespace: 5 },
    usage: { promptTokens: 7, completionTokens: 0, cachedTokens: 0 },
  }

  test('round-trips the header and a float32 payload, even from an unaligned view', () => {
    const vector = new Float32Array([0.5, -1.25, 3])
    const bytes = encodeEntry(header, vectorBytes(vector))
    const unaligned = new Uint8Array(bytes.byteLength + 1)
    unaligned.set(bytes, 1)
    const view = unaligned.subarray(1)
    expect(decodeHeader(view, 'embedding')).toEqual(header)
    expect(Array.from(vectorOf(view))).toEqual([0.5, -1.25, 3])
    expect(decodeHeader(view, 'response')).toBeNull()
    expect(decodeHeader(new Uint8Array(10), 'embedding')).toBeNull()
    expect(payloadOf(bytes).byteLength).toBe(12)
  })

  test('rejects other versions, entries past TTL (unless within staleness), and older than max-age', () => {
    const current = header.versions
    const at = (ms: number) => header.storedAt + ms
    const fresh = { maxAgeMs: null, staleMs: 0 }
    expect(rejectEntry(header, current, at(59_999), fresh)).toBeNull()
    expect(rejectEntry(header, current, at(60_000), fresh)).toBe('expired')
    expect(rejectEntry(header, current, at(60_000), { maxAgeMs: null, staleMs: 10_000 })).toBeNull()
    expect(rejectEntry(header, { epoch: 3, namespace: 5 }, at(1), fresh)).toBe('version')
    expect(rejectEntry(header, { epoch: 2, namespace: 6 }, at(1), fresh)).toBe('version')
    expect(rejectEntry(header, current, at(11_000), { maxAgeMs: 10_000, staleMs: 0 })).toBe('too_old')
  })
})

const chunk = (choices: Chunk['choices'], extra: Partial<Chunk> = {}): Chunk => ({
  id: 'c1',
  object: 'chat.completion.chunk',
  created: 1,
  model: 'm',
  choices,
  ...extra,
})

describe('stream assembly and replay', () => {
  test('content, tool calls merged by index, finish reasons and usage become one completion', () => {
    const assembler = new StreamAssembler(10_000)
    const usage = { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 }
    assembler.add(chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]))
    assembler.add(chunk([{ index: 0, delta: { content: 'Hel' }, finish_reason: null }]))
    assembler.add(chunk([{ index: 0, delta: { content: 'lo' }, finish_reason: null }]))
    const call = (index: number, fields: object) => ({ index, ...fields })
    assembler.add(
      chunk([
        {
          index: 1,
          delta: {
            tool_calls: [
              call(0, { id: 't0', type: 'function', function: { name: 'get', arguments: '{"a"' } }),
            ],
          },
          finish_reason: null,
        },
      ]),
    )
    assembler.add(
      chunk([
        {
          index: 1,
          delta: { tool_calls: [call(1, { id: 't1', function: { name: 'put' } })] },
          finish_reason: null,
        },
      ]),
    )
    assembler.add(
      chunk([
        {
          index: 1,
          delta: { tool_calls: [call(0, { function: { arguments: ':1}' } })] },
          finish_reason: null,
        },
      ]),
    )
    assembler.add(chunk([{ index: 0, delta: {}, finish_reason: 'stop' }]))
    assembler.add(chunk([{ index: 1, delta: {}, finish_reason: 'tool_calls' }]))
    assembler.add(chunk([], { usage }))
    const completion = assembler.result({ prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 })
    expect(completion).toMatchObject({ id: 'c1', object: 'chat.completion', model: 'm', usage })
    expect(completion.choices[0]).toMatchObject({
      message: { role: 'assistant', content: 'Hello' },
      finish_reason: 'stop',
    })
    expect(completion.choices[1]!.message).toEqual({
      role: 'assistant',
      content: null,
      tool_calls: [
        { id: 't0', type: 'function', function: { name: 'get', arguments: '{"a":1}' } },
        { id: 't1', function: { name: 'put', arguments: '' } },
      ],
    })
  })

  test('an answer longer than the bound is dropped, not held', () => {
    const assembler = new StreamAssembler(5)
    assembler.add(chunk([{ index: 0, delta: { content: 'far too long' }, finish_reason: null }]))
    expect(assembler.complete).toBe(false)
  })

  test('replay: role, content, tool calls, finish, usage only when asked, then [DONE]', () => {
    const completion = {
      id: 'x',
      object: 'chat.completion' as const,
      created: 5,
      model: 'm',
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: 'Hi there',
            tool_calls: [{ id: 't', type: 'function', function: { name: 'f', arguments: '{}' } }],
          },
          finish_reason: 'stop',
        },
      ],
      usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
    }
    const frames = (includeUsage: boolean) =>
      replayFrames(completion, { includeUsage })
        .split('\n\n')
        .filter(Boolean)
        .map((frame) => frame.replace(/^data: /, ''))
    const withUsage = frames(true)
    expect(withUsage.at(-1)).toBe('[DONE]')
    const chunks = withUsage.slice(0, -1).map((data) => JSON.parse(data) as Chunk)
    expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === 'x' && c.created === 5)).toBe(
      true,
    )
    expect(chunks.map((c) => c.choices[0]?.delta)).toEqual([
      { role: 'assistant', content: '' },
      { content: 'Hi there' },
      { tool_calls: [{ index: 0, id: 't', type: 'function', function: { name: 'f', arguments: '{}' } }] },
      {},
      undefined,
    ])
    expect(chunks[3]!.choices[0]!.finish_reason).toBe('stop')
    expect(chunks[4]!.usage).toEqual(completion.usage)
    expect(frames(false)).toHaveLength(withUsage.length - 1)
  })
})

describe('helpers', () => {
  test('apportion splits exactly, in proportion', () => {
    expect(apportion(10, [1, 1, 2])).toEqual([3, 2, 5])
    expect(apportion(7, [3, 3, 3]).reduce((a, b) => a + b)).toBe(7)
    expect(apportion(4, [0, 0])).toEqual([2, 2])
  })
})

describe('memory store byte bound', () => {
  test('evicts byte values least recently used first, never counters', async () => {
    const store = new MemoryStore({ maxBytes: 1200, sweepIntervalMs: 0 })
    await store.incr('counter')
    const value = new Uint8Array(300)
    await store.set('a', value, 0)
    await store.set('b', value, 0)
    await store.set('c', value, 0)
    expect(await store.get('a')).not.toBeNull()
    await store.set('d', value, 0)
    expect(await store.get('b')).toBeNull()
    expect(await store.get('a')).not.toBeNull()
    expect(await store.get('counter')).toEqual(new TextEncoder().encode('1'))
    expect(store.data.bytes).toBeLessThanOrEqual(1200)
    await store.del('a', 'c', 'd')
    expect(store.data.bytes).toBe(0)
    await store.close()
  })
})
