/**
 * The embedding cache: one entry per input (model, keyed request fields and the input's
 * text or tokens, in the request's namespace), stored as packed float32. A request's inputs
 * are looked up together in one round trip; only the missing ones go upstream, each distinct
 * input once, and the answer is put back together in input order.
 *
 * Upstream reports usage for a whole batch, not per input, so the tokens recorded with each
 * new entry (what a later hit saves) are the batch's prompt tokens split by input length.
 */
import type { Exchange } from '../exchange'
import { absorb, ageSeconds, type CacheContext, maxAgeMs, noteName, usable } from './context'
import { decodeHeader, encodeEntry, rejectEntry, type Versions, vectorBytes, vectorOf } from './entry'
import { embeddingKeys, namespaceFor } from './key'
import type { CacheDirectives, CacheRule } from './policy'
import { readGeneration } from './reads'

export type EmbeddingInput = string | number[]

interface EmbeddingBatchHits {
  vectors: Array<Float32Array | null>
  tokens: number
  /** Age in seconds of the oldest entry used. */
  age: number
}

interface PendingWrite {
  key: string
  vector: Float32Array
  tokens: number
}

interface EmbeddingNote {
  kind: 'embedding'
  rule: CacheRule
  versions: Versions
  writes: PendingWrite[]
}

/** One request's inputs: what the cache answered, and what must go upstream. */
export class EmbeddingBatch {
  /** Per input: its vector, or null until upstream answers it. */
  readonly vectors: Array<Float32Array | null>
  /** Indexes of the inputs to send upstream, each distinct input once, in input order. */
  readonly upstream: number[] = []
  /** Prompt tokens the cached inputs cost when they were embedded: what the hits saved. */
  readonly cachedTokens: number
  /** Age of the oldest entry used, for the `Age` header of an answer entirely from the cache. */
  readonly ageSeconds: number

  constructor(
    readonly status: 'HIT' | 'MISS' | 'BYPASS',
    private readonly items: readonly EmbeddingInput[],
    hits: EmbeddingBatchHits,
    private readonly store: {
      exchange: Exchange
      keys: string[]
      rule: CacheRule
      versions: Versions
    } | null,
  ) {
    this.vectors = hits.vectors
    this.cachedTokens = hits.tokens
    this.ageSeconds = hits.age
    const sent = new Set<string>()
    hits.vectors.forEach((vector, index) => {
      if (vector) return
      const key = store?.keys[index]
      if (key !== undefined && sent.has(key)) return
      if (key !== undefined) sent.add(key)
      this.upstream.push(index)
    })
  }

  /** How many inputs the cache answered. */
  get hits(): number {
    return this.vectors.length - this.vectors.filter((vector) => vector === null).length
  }

  /** Every input's vector, once the cache and upstream between them answered them all. */
  complete(): Float32Array[] {
    if (this.vectors.includes(null)) throw new Error('embedding batch has unanswered inputs')
    return this.vectors as Float32Array[]
  }

  /** The inputs to send upstream, in `upstream` order. */
  upstreamInputs(): EmbeddingInput[] {
    return this.upstream.map((index) => this.items[index]!)
  }

  /**
   * Puts upstream's vectors (in `upstream` order) in place, duplicates included; they are
   * stored when the Exchange settles as ok.
   */
  fill(vectors: Float32Array[], promptTokens: number): void {
    const byKey = new Map<string, Float32Array>()
    this.upstream.forEach((index, position) => {
      this.vectors[index] = vectors[position]!
      const key = this.store?.keys[index]
      if (key !== undefined) byKey.set(key, vectors[position]!)
    })
    if (!this.store) return
    const keys = this.store.keys
    this.vectors.forEach((vector, index) => {
      if (vector === null) this.vectors[index] = byKey.get(keys[index]!) ?? null
    })
    const tokens = apportion(
      promptTokens,
      this.upstream.map((index) => this.items[index]!.length),
    )
    const note: EmbeddingNote = {
      kind: 'embedding',
      rule: this.store.rule,
      versions: this.store.versions,
      writes: this.upstream.map((index, position) => ({
        key: keys[index]!,
        vector: vectors[position]!,
        tokens: tokens[position]!,
      })),
    }
    this.store.exchange.notes.set(noteName, note)
  }
}

/** Splits `total` over `weights` in proportion, in whole numbers that add up to it exactly. */
export function apportion(total: number, weights: number[]): number[] {
  const sum = weights.reduce((a, b) => a + b, 0)
  const exact = weights.map((weight) => (sum > 0 ? (total * weight) / sum : total / weights.length))
  const shares = exact.map(Math.floor)
  let rest = total - shares.reduce((a, b) => a + b, 0)
  const byRemainder = exact.map((value, index) => [value - Math.floor(value), index] as const)
  byRemainder.sort((a, b) => b[0] - a[0])
  for (const [, index] of byRemainder) {
    if (rest <= 0) break
    shares[index]!++
    rest--
  }
  return shares
}

export class EmbeddingCache {
  constructor(private readonly context: CacheContext) {}

  /**
   * Looks every input up; the store reads are issued before this returns (one round trip,
   * shared with the quota reservation). Sets `exchange.cacheStatus`: HIT when every input
   * was cached, MISS when some go upstream, BYPASS when the cache is not used. Never rejects.
   */
  async lookup(
    exchange: Exchange,
    body: { model: string; [field: string]: unknown },
    items: readonly EmbeddingInput[],
    directives: CacheDirectives,
  ): Promise<EmbeddingBatch> {
    const rule = this.context.policies.rule('embedding', body.model)
    const none = { vectors: items.map(() => null), tokens: 0, age: 0 }
    if (!usable(this.context, rule, directives, exchange)) return this.bypass(exchange, items, none)
    const namespace = namespaceFor(exchange.principal!.userId, body.model, rule.namespace === 'shared')
    const keys = embeddingKeys(namespace, body, items)
    let read: Awaited<ReturnType<typeof readGeneration>>
    try {
      read = await readGeneration(this.context.store, namespace, directives.noCache ? [] : keys)
    } catch (error) {
      absorb(this.context, error)
      return this.bypass(exchange, items, none)
    }
    const hits = this.decode(read.entries, read.versions, items.length, maxAgeMs(directives))
    const cached = hits.vectors.filter((vector) => vector !== null).length
    this.context.counters.lookup('embedding', 'hit', cached)
    this.context.counters.lookup('embedding', 'miss', items.length - cached)
    exchange.cacheStatus = cached === items.length ? 'HIT' : 'MISS'
    return new EmbeddingBatch(exchange.cacheStatus, items, hits, {
      exchange,
      keys,
      rule,
      versions: read.versions,
    })
  }

  private bypass(exchange: Exchange, items: readonly EmbeddingInput[], none: EmbeddingBatchHits) {
    this.context.counters.lookup('embedding', 'bypass', items.length)
    exchange.cacheStatus = 'BYPASS'
    return new EmbeddingBatch('BYPASS', items, none, null)
  }

  private decode(
    entries: Array<Uint8Array | null>,
    versions: Versions,
    count: number,
    maxAge: number | null,
  ): EmbeddingBatchHits {
    const now = this.context.now()
    const hits: EmbeddingBatchHits = { vectors: [], tokens: 0, age: 0 }
    for (let i = 0; i < count; i++) {
      const bytes = entries[i]
      const header = bytes ? decodeHeader(bytes, 'embedding') : null
      if (
        !bytes ||
        !header ||
        rejectEntry(header, versions, now, { maxAgeMs: maxAge, staleMs: 0 }) !== null
      ) {
        hits.vectors.push(null)
        continue
      }
      hits.vectors.push(vectorOf(bytes))
      hits.tokens += header.usage.promptTokens
      hits.age = Math.max(hits.age, ageSeconds(header.storedAt, now))
    }
    return hits
  }

  /** Settlement: writes the new entries of an ok answer, all issued in one tick. */
  async settle(exchange: Exchange): Promise<void> {
    const note = exchange.notes.get(noteName) as EmbeddingNote | undefined
    if (note?.kind !== 'embedding' || exchange.settlement?.outcome !== 'ok') return
    const storedAt = this.context.now()
    const ttl = note.rule.ttlMs + this.context.staleMs
    try {
      await Promise.all(
        note.writes.map(async ({ key, vector, tokens }) => {
          const usage = { promptTokens: tokens, completionTokens: 0, cachedTokens: 0 }
          const header = {
            kind: 'embedding' as const,
            storedAt,
            ttlMs: note.rule.ttlMs,
            versions: note.versions,
          }
          const bytes = encodeEntry({ ...header, usage }, vectorBytes(vector))
          if (bytes.byteLength > this.context.maxEntryBytes) return this.context.counters.tooLarge()
          await this.context.store.set(key, bytes, ttl)
          this.context.counters.wrote('embedding', bytes.byteLength)
        }),
      )
    } catch (error) {
      absorb(this.context, error)
    }
  }
}
