/**
 * The exact-match cache of chat completions, with request coalescing.
 *
 * The route's sequence: `lookup` (issued next to the quota reservation, one round trip),
 * then, once admitted, `claim`: a hit, a coalesced answer, or null to call upstream. A miss
 * hands its answer over with `record` (JSON) or `collector` (a stream's chunks); the entry
 * is written when the Exchange settles as `ok`, off the critical path. If admission is
 * denied after the lookup, the route calls `abandon` so a flight it leads never strands
 * its followers.
 *
 * A JSON hit answers the stored bytes as they are: the same `id` and `created` as the first
 * answer (it is the same completion; the gateway's `x-request-id` tells requests apart).
 */
import type { Exchange } from '../exchange'
import { StreamAssembler } from './assemble'
import { Coalescer, type Flight, follow } from './coalescer'
import { absorb, ageSeconds, type CacheContext, maxAgeMs, noteName, usable } from './context'
import { decodeHeader, type EntryUsage, encodeEntry, payloadOf, rejectEntry, type Versions } from './entry'
import { namespaceFor, responseKey } from './key'
import { type CacheDirectives, type CacheRule, isDeterministic } from './policy'
import { readGeneration } from './reads'
import type { ChatRequestLike, Chunk, Completion, WireUsage } from './wire'

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** A stored (or just produced) answer: its JSON bytes, and the usage it cost upstream. */
export class CachedAnswer {
  private parsed: Completion | undefined

  constructor(
    /** The `chat.completion` as JSON, exactly what a JSON hit answers. */
    readonly body: Uint8Array,
    readonly usage: EntryUsage,
    readonly storedAt: number,
    completion?: Completion,
  ) {
    this.parsed = completion
  }

  /** The JSON text, as a JSON hit answers it. */
  text(): string {
    return decoder.decode(this.body)
  }

  /** The completion object, parsed on first use (stream replays); JSON hits never need it. */
  completion(): Completion {
    this.parsed ??= JSON.parse(this.text()) as Completion
    return this.parsed
  }
}

export interface CacheHit {
  answer: CachedAnswer
  /** Seconds since the entry was stored, for the `Age` header. */
  ageSeconds: number
  /** Shared from a concurrent identical request rather than read from the store. */
  coalesced: boolean
}

export interface ResponseLookup {
  /** HIT: `hit` answers; MISS: go upstream, the answer will be stored; BYPASS: nothing stored. */
  status: 'HIT' | 'MISS' | 'BYPASS'
  hit: CacheHit | null
  /** An identical request already on its way upstream, whose answer `claim` waits for. */
  flight: Flight<CachedAnswer> | null
}

interface ResponseNote {
  kind: 'response'
  key: string
  rule: CacheRule
  /** Read by the lookup; null when the store could not answer, and then nothing is written. */
  versions: Versions | null
  /** Whether the answer is to be written at settlement. */
  store: boolean
  /** The flight this request leads, ended at settlement. */
  leading: Flight<CachedAnswer> | null
  completion: Completion | null
  assembler: StreamAssembler | null
}

const bypass: ResponseLookup = { status: 'BYPASS', hit: null, flight: null }

function noteOf(exchange: Exchange): ResponseNote | undefined {
  const note = exchange.notes.get(noteName) as ResponseNote | undefined
  return note?.kind === 'response' ? note : undefined
}

function wireUsage(usage: EntryUsage): WireUsage {
  return {
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    total_tokens: usage.promptTokens + usage.completionTokens,
  }
}

export class ResponseCache {
  private readonly flights = new Coalescer<CachedAnswer>()

  constructor(
    private readonly context: CacheContext,
    private readonly coalesce: boolean,
  ) {}

  get inFlight(): number {
    return this.flights.inFlight
  }

  /**
   * Reads the entry for this request. Its store reads are issued before this returns, so a
   * caller that starts the quota reservation in the same tick gets both in one round trip.
   * Never rejects: a store that cannot answer makes it a BYPASS.
   */
  lookup(exchange: Exchange, body: ChatRequestLike, directives: CacheDirectives): Promise<ResponseLookup> {
    const rule = this.context.policies.rule('response', body.model)
    if (!usable(this.context, rule, directives, exchange)) return Promise.resolve(bypass)
    if (rule.mode === 'deterministic' && !isDeterministic(body)) return Promise.resolve(bypass)
    const shared = rule.namespace === 'shared'
    const namespace = namespaceFor(exchange.principal!.userId, body.model, shared)
    const key = responseKey(namespace, body)
    const note: ResponseNote = {
      kind: 'response',
      key,
      rule,
      versions: null,
      store: true,
      leading: null,
      completion: null,
      assembler: null,
    }
    let flight: Flight<CachedAnswer> | null = null
    if (this.coalesce) {
      const current = this.flights.current(key)
      // no-cache wants a fresh answer of its own; it may still lead others.
      if (current === undefined) note.leading = this.flights.lead(key)
      else if (!directives.noCache) flight = current
    }
    exchange.notes.set(noteName, note)
    return this.read(note, namespace, directives, flight)
  }

  private async read(
    note: ResponseNote,
    namespace: string,
    directives: CacheDirectives,
    flight: Flight<CachedAnswer> | null,
  ): Promise<ResponseLookup> {
    try {
      const keys = directives.noCache ? [] : [note.key]
      const { versions, entries } = await readGeneration(this.context.store, namespace, keys)
      note.versions = versions
      const hit = entries[0] ? this.fresh(entries[0], versions, maxAgeMs(directives), 0) : null
      return hit ? { status: 'HIT', hit, flight: null } : { status: 'MISS', hit: null, flight }
    } catch (error) {
      absorb(this.context, error)
      return { status: 'BYPASS', hit: null, flight }
    }
  }

  private fresh(
    bytes: Uint8Array,
    versions: Versions,
    maxAge: number | null,
    staleMs: number,
  ): CacheHit | null {
    const header = decodeHeader(bytes, 'response')
    const now = this.context.now()
    if (!header || rejectEntry(header, versions, now, { maxAgeMs: maxAge, staleMs }) !== null) return null
    const answer = new CachedAnswer(payloadOf(bytes), header.usage, header.storedAt)
    return { answer, ageSeconds: ageSeconds(header.storedAt, now), coalesced: false }
  }

  /**
   * After admission: the answer from the cache (a hit, or a concurrent identical request's
   * answer), or null to call upstream. Sets `exchange.cacheStatus`. A follower whose client
   * goes away while it waits gets null; its upstream call then fails at once as cancelled.
   */
  async claim(exchange: Exchange, lookup: ResponseLookup, signal: AbortSignal): Promise<CacheHit | null> {
    const note = noteOf(exchange)
    if (lookup.hit) {
      this.context.counters.lookup('response', 'hit')
      exchange.cacheStatus = 'HIT'
      if (note) this.endLeadership(note, lookup.hit.answer)
      return lookup.hit
    }
    if (lookup.flight) {
      const answer = await follow(lookup.flight, signal)
      if (answer && note) {
        this.context.counters.lookup('response', 'coalesced')
        exchange.cacheStatus = 'HIT'
        note.store = false
        return { answer, ageSeconds: 0, coalesced: true }
      }
    }
    this.context.counters.lookup('response', lookup.status === 'BYPASS' ? 'bypass' : 'miss')
    exchange.cacheStatus = lookup.status
    return null
  }

  /** Admission was denied after the lookup: releases a flight this request leads. */
  abandon(exchange: Exchange): void {
    const note = noteOf(exchange)
    if (note) this.endLeadership(note, null)
  }

  private endLeadership(note: ResponseNote, answer: CachedAnswer | null): void {
    note.store = false
    if (!note.leading) return
    note.leading.finish(answer)
    this.flights.land(note.key, note.leading)
    note.leading = null
  }

  /** A JSON miss: the completion to store once the Exchange settles as ok. */
  record(exchange: Exchange, completion: Completion): void {
    const note = noteOf(exchange)
    if (note && (note.store || note.leading)) note.completion = completion
  }

  /** A streamed miss: a sink for the relayed chunks, or undefined when nothing will be stored. */
  collector(exchange: Exchange): ((chunk: Chunk) => void) | undefined {
    const note = noteOf(exchange)
    if (!note || !(note.store || note.leading)) return undefined
    const assembler = new StreamAssembler(this.context.maxEntryBytes)
    note.assembler = assembler
    return (chunk) => assembler.add(chunk)
  }

  /**
   * For the resilience layer, when the upstream cannot answer: the entry even past its TTL,
   * within the configured staleness (and the client's max-age). Sets `cacheStatus` to STALE
   * (or HIT for an entry still fresh). Never rejects.
   */
  async lookupStale(
    exchange: Exchange,
    body: ChatRequestLike,
    directives: CacheDirectives,
  ): Promise<CacheHit | null> {
    const rule = this.context.policies.rule('response', body.model)
    if (!usable(this.context, rule, directives, exchange) || directives.noCache) return null
    if (rule.mode === 'deterministic' && !isDeterministic(body)) return null
    const namespace = namespaceFor(exchange.principal!.userId, body.model, rule.namespace === 'shared')
    const key = responseKey(namespace, body)
    try {
      const { versions, entries } = await readGeneration(this.context.store, namespace, [key])
      const bytes = entries[0]
      const hit = bytes ? this.fresh(bytes, versions, maxAgeMs(directives), this.context.staleMs) : null
      if (!hit) return null
      const stale = hit.ageSeconds * 1000 >= rule.ttlMs
      this.context.counters.lookup('response', stale ? 'stale' : 'hit')
      exchange.cacheStatus = stale ? 'STALE' : 'HIT'
      return hit
    } catch (error) {
      absorb(this.context, error)
      return null
    }
  }

  /** Settlement (the hub's cache phase): shares the answer with followers, writes the entry. */
  async settle(exchange: Exchange): Promise<void> {
    const note = noteOf(exchange)
    if (!note) return
    const leading = note.leading
    try {
      const answer = exchange.settlement?.outcome === 'ok' ? this.answerOf(note, exchange) : null
      leading?.finish(answer)
      if (answer && note.store && note.versions) await this.write(note, note.versions, answer)
    } catch (error) {
      absorb(this.context, error)
    } finally {
      // Only now, after the write: a request that finds no flight from here on reads the entry.
      if (leading) this.flights.land(note.key, leading)
    }
  }

  private answerOf(note: ResponseNote, exchange: Exchange): CachedAnswer | null {
    const usage = { ...exchange.usage }
    const completion =
      note.completion ?? (note.assembler?.complete ? note.assembler.result(wireUsage(usage)) : null)
    if (!completion) return null
    return new CachedAnswer(encoder.encode(JSON.stringify(completion)), usage, this.context.now(), completion)
  }

  private async write(note: ResponseNote, versions: Versions, answer: CachedAnswer): Promise<void> {
    if (answer.body.byteLength > this.context.maxEntryBytes) {
      this.context.counters.tooLarge()
      return
    }
    const header = { kind: 'response' as const, storedAt: answer.storedAt, ttlMs: note.rule.ttlMs, versions }
    const bytes = encodeEntry({ ...header, usage: answer.usage }, answer.body)
    await this.context.store.set(note.key, bytes, note.rule.ttlMs + this.context.staleMs)
    this.context.counters.wrote('response', bytes.byteLength)
  }
}
