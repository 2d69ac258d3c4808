/**
 * Embedding vectors between the upstream, the cache and the client: the request's inputs as
 * a list, upstream's answer in input order as float32 (the precision the cache stores, so a
 * cached and a fresh answer are the same numbers), and the client's encoding of them.
 */
import type { EmbeddingInput } from '../../plugins/cache'
import {
  type EmbeddingRequest,
  UpstreamError,
  type EmbeddingResponse as WireEmbeddings,
} from '../upstream/provider'

/** Every form of `input` as a list of items, the unit the embedding cache keys on. */
export function embeddingItems(input: EmbeddingRequest['input']): EmbeddingInput[] {
  if (typeof input === 'string') return [input]
  return typeof input[0] === 'number' ? [input as number[]] : (input as EmbeddingInput[])
}

/** Upstream's vectors in the order of the inputs sent, as float32 (what the cache stores). */
export function vectorsInOrder(response: WireEmbeddings, count: number): Float32Array[] {
  const vectors: Float32Array[] = []
  for (const item of response.data) {
    const { embedding } = item
    vectors[item.index] =
      typeof embedding === 'string'
        ? new Float32Array(Uint8Array.fromBase64(embedding).buffer)
        : Float32Array.from(embedding)
  }
  for (let i = 0; i < count; i++) {
    if (!vectors[i])
      throw new UpstreamError({
        kind: 'protocol',
        status: 502,
        message: `The upstream answered ${response.data.length} embeddings for ${count} inputs.`,
      })
  }
  return vectors
}

export function encodeEmbeddings(
  vectors: Float32Array[],
  format: 'float' | 'base64',
  model: string,
  usage: WireEmbeddings['usage'],
): WireEmbeddings {
  const data = vectors.map((vector, index) => ({
    object: 'embedding' as const,
    index,
    embedding:
      format === 'base64'
        ? Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64')
        : Array.from(vector),
  }))
  return { object: 'list', data, model, usage }
}
