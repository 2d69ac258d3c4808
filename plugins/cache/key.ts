/**
 * Cache keys: SHA-256 over a canonical JSON of what changes the answer, plus the namespace.
 * Canonical means object keys sorted at every depth and absent (undefined) fields dropped, so
 * two bodies that differ only in key order or in formatting share a key; everything else,
 * including `null` versus absent, is kept as sent (a miss is safe, a wrong hit is not).
 *
 * Hashing is synchronous on purpose: the lookup's store reads must be issued in the same tick
 * as the quota reservation, so node-redis writes both in one pipeline.
 */

/** Request fields that never change the answer: a streamed and a JSON request share an entry. */
const unkeyedChatFields = new Set(['stream', 'stream_options', 'user'])
/** Embedding fields outside the per-input key: the input is keyed item by item, floats are always stored. */
const unkeyedEmbeddingFields = new Set(['input', 'encoding_format', 'user'])

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value)) {
    let out = '['
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ','
      // JSON.stringify writes undefined array items as null; so does this.
      out += value[i] === undefined ? 'null' : canonicalJson(value[i])
    }
    return `${out}]`
  }
  const record = value as Record<string, unknown>
  let out = '{'
  let first = true
  for (const key of Object.keys(record).sort()) {
    const item = record[key]
    if (item === undefined) continue
    out += `${first ? '' : ','}${JSON.stringify(key)}:${canonicalJson(item)}`
    first = false
  }
  return `${out}}`
}

export function sha256Hex(text: string): string {
  return new Bun.CryptoHasher('sha256').update(text).digest('hex')
}

function withoutFields(body: Record<string, unknown>, fields: Set<string>): Record<string, unknown> {
  const kept: Record<string, unknown> = {}
  for (const key in body) if (!fields.has(key)) kept[key] = body[key]
  return kept
}

export function userNamespace(userId: string): string {
  return `u:${userId}`
}

/** `u:<userId>` by default; `s:<model>` for a model configured as shared. */
export function namespaceFor(userId: string, model: string, shared: boolean): string {
  return shared ? `s:${model}` : userNamespace(userId)
}

export const epochKey = 'cache:epoch'

export function versionKey(namespace: string): string {
  return `cache:ns:${namespace}`
}

/** The store key of a chat answer: the namespace and every keyed field of the body. */
export function responseKey(namespace: string, body: Record<string, unknown>): string {
  return `cache:r:${sha256Hex(`${namespace}\n${canonicalJson(withoutFields(body, unkeyedChatFields))}`)}`
}

/**
 * Store keys of embedding inputs: one per input item, each over the namespace, the keyed
 * request fields (model, dimensions...) and the item. The shared part is serialised once.
 */
export function embeddingKeys(
  namespace: string,
  body: Record<string, unknown>,
  items: ReadonlyArray<string | number[]>,
): string[] {
  const shared = `${namespace}\n${canonicalJson(withoutFields(body, unkeyedEmbeddingFields))}\n`
  return items.map((item) => `cache:e:${sha256Hex(shared + JSON.stringify(item))}`)
}
