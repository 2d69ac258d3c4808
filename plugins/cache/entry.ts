/**
 * The stored form of a cache entry: a fixed binary header and the payload, in one byte
 * string (binary-safe in Redis, and what the memory store's byte bound counts).
 *
 * The header carries what a lookup checks without touching the payload (format, when it was
 * stored and for how long it is fresh, the global epoch and namespace version it was stored
 * under) and the usage the original answer cost, so a JSON hit is served from the payload
 * bytes as they are, never parsed. Payloads: a chat completion as UTF-8 JSON, or an
 * embedding as packed little-endian float32 (the layout of OpenAI's base64 embeddings; Bun
 * runs on little-endian targets only, so a Float32Array view is that layout).
 */

const formatVersion = 1
export const headerBytes = 48

export type EntryKind = 'response' | 'embedding'
const kindCodes: Record<EntryKind, number> = { response: 1, embedding: 2 }

/** The generation an entry was stored under; a bump of either makes it unreachable. */
export interface Versions {
  epoch: number
  namespace: number
}

export interface EntryUsage {
  promptTokens: number
  completionTokens: number
  cachedTokens: number
}

export interface EntryHeader {
  kind: EntryKind
  storedAt: number
  ttlMs: number
  versions: Versions
  usage: EntryUsage
}

export function encodeEntry(header: EntryHeader, payload: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(headerBytes + payload.byteLength)
  const view = new DataView(bytes.buffer)
  view.setUint8(0, formatVersion)
  view.setUint8(1, kindCodes[header.kind])
  view.setUint32(4, header.usage.promptTokens, true)
  view.setUint32(8, header.usage.completionTokens, true)
  view.setUint32(12, header.usage.cachedTokens, true)
  view.setFloat64(16, header.storedAt, true)
  view.setFloat64(24, header.ttlMs, true)
  view.setFloat64(32, header.versions.epoch, true)
  view.setFloat64(40, header.versions.namespace, true)
  bytes.set(payload, headerBytes)
  return bytes
}

/** The header, or null for bytes that are not an entry of this kind and format (never trusted). */
export function decodeHeader(bytes: Uint8Array, kind: EntryKind): EntryHeader | null {
  if (bytes.byteLength < headerBytes) return null
  const view = new DataView(bytes.buffer, bytes.byteOffset, headerBytes)
  if (view.getUint8(0) !== formatVersion || view.getUint8(1) !== kindCodes[kind]) return null
  return {
    kind,
    usage: {
      promptTokens: view.getUint32(4, true),
      completionTokens: view.getUint32(8, true),
      cachedTokens: view.getUint32(12, true),
    },
    storedAt: view.getFloat64(16, true),
    ttlMs: view.getFloat64(24, true),
    versions: { epoch: view.getFloat64(32, true), namespace: view.getFloat64(40, true) },
  }
}

export function payloadOf(bytes: Uint8Array): Uint8Array {
  return bytes.subarray(headerBytes)
}

/** The vector of an embedding entry; copied only when the bytes are not 4-byte aligned. */
export function vectorOf(bytes: Uint8Array): Float32Array {
  const payload = payloadOf(bytes)
  const aligned = payload.byteOffset % 4 === 0 ? payload : payload.slice()
  return new Float32Array(aligned.buffer, aligned.byteOffset, Math.floor(aligned.byteLength / 4))
}

export function vectorBytes(vector: Float32Array): Uint8Array {
  return new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength)
}

/** Why an entry read from the store cannot answer now; null when it can. */
export function rejectEntry(
  header: EntryHeader,
  current: Versions,
  now: number,
  limits: { maxAgeMs: number | null; staleMs: number },
): 'version' | 'expired' | 'too_old' | null {
  if (header.versions.epoch !== current.epoch || header.versions.namespace !== current.namespace)
    return 'version'
  const age = now - header.storedAt
  if (age >= header.ttlMs + limits.staleMs) return 'expired'
  if (limits.maxAgeMs !== null && age > limits.maxAgeMs) return 'too_old'
  return null
}
