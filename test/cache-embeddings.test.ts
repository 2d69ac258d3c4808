/**
 * The embedding cache end to end, on the memory store and on Redis: per-input entries, only
 * the uncached inputs sent upstream (each distinct one once), answers merged in input order,
 * usage and cost counting only what went upstream, the saving priced.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { RedisStore } from '../plugins/store'
import type { CallContext, EmbeddingRequest, EmbeddingResponse } from '../src/upstream/provider'
import { SimulatorProvider } from '../src/upstream/simulator'
import { requirePostgres } from './support/db'
import { eventually, type Gateway, startGateway } from './support/gateway'
import { requireRedis, testKeyPrefix } from './support/redis'

/** The built-in simulator, remembering the input of every embeddings call it gets. */
class RecordingSimulator extends SimulatorProvider {
  readonly inputs: Array<EmbeddingRequest['input']> = []

  override embeddings(request: EmbeddingRequest, context: CallContext): Promise<EmbeddingResponse> {
    this.inputs.push(request.input)
    return super.embeddings(request, context)
  }
}

interface Embeddings {
  data: Array<{ index: number; embedding: number[] | string }>
  usage: { prompt_tokens: number; total_tokens: number }
}

/** What the model itself answers for these inputs, at the float32 precision the gateway serves. */
async function expectedVectors(input: string[]): Promise<number[][]> {
  const response = await new SimulatorProvider().embeddings(
    { model: 'sim-embed-1', input },
    { signal: new AbortController().signal },
  )
  return response.data.map((item) => Array.from(Float32Array.from(item.embedding as number[])))
}

for (const backend of ['memory', 'redis'] as const) {
  describe(`embedding cache on ${backend}`, () => {
    let gateway: Gateway
    let key: string
    const sim = new RecordingSimulator()

    beforeAll(async () => {
      const prefix = testKeyPrefix(`embed-${crypto.randomUUID()}`)
      gateway = await startGateway({
        env: { DATABASE_URL: await requirePostgres() },
        ...(backend === 'redis' ? { store: await connectedStore(prefix) } : {}),
        providers: { sim },
      })
      key = await gateway.createKey()
    }, 30_000)
    afterAll(() => gateway?.stop())

    /** Inputs of three words and equal length each, so each costs exactly 3 tokens. */
    const inputs = (count: number) => {
      const run = crypto.randomUUID().slice(0, 8)
      return Array.from({ length: count }, (_, i) => `input ${String(i).padStart(2, '0')} ${run}`)
    }

    const embed = async (body: Record<string, unknown>, apiKey = key) => {
      const response = await fetch(`${gateway.url}/v1/embeddings`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'sim-embed-1', ...body }),
      })
      expect(response.status).toBe(200)
      const json = (await response.json()) as Embeddings
      const id = response.headers.get('x-request-id')!
      await eventually(() => gateway.settled.some((exchange) => exchange.id === id))
      const exchange = gateway.settled.find((settled) => settled.id === id)!
      return {
        json,
        exchange,
        cache: response.headers.get('x-cache'),
        hits: response.headers.get('x-cache-hits'),
      }
    }

    test('10 inputs with 7 cached: upstream gets exactly the other 3; order, vectors and usage are right', async () => {
      const all = inputs(10)
      const cached = [0, 2, 3, 5, 6, 8, 9].map((i) => all[i]!)
      await embed({ input: cached })
      const calls = sim.inputs.length
      const { json, exchange, cache, hits } = await embed({ input: all })
      expect(sim.inputs.slice(calls)).toEqual([[all[1]!, all[4]!, all[7]!]])
      expect({ cache, hits }).toEqual({ cache: 'MISS', hits: '7' })
      expect(json.data.map((item) => item.index)).toEqual([...Array(10).keys()])
      expect(json.data.map((item) => item.embedding)).toEqual(await expectedVectors(all))
      expect(json.usage).toEqual({ prompt_tokens: 9, total_tokens: 9 })
      expect(exchange.settlement?.outcome).toBe('ok')
      expect(exchange.usage.promptTokens).toBe(9)
      // sim-embed-1 costs $0.02 per 1M input tokens: 9 tokens charged, 21 saved.
      expect(exchange.costNanoUsd).toBe(180n)
      expect(exchange.savedNanoUsd).toBe(420n)
    })

    test('every input cached: no upstream call, no usage, settled as cached; base64 decodes the same', async () => {
      const all = inputs(4)
      await embed({ input: all })
      const calls = sim.inputs.length
      const { json, exchange, cache } = await embed({ input: all, encoding_format: 'base64' })
      expect(sim.inputs.length).toBe(calls)
      expect(cache).toBe('HIT')
      expect(json.usage).toEqual({ prompt_tokens: 0, total_tokens: 0 })
      const decoded = json.data.map((item) =>
        Array.from(new Float32Array(Uint8Array.fromBase64(item.embedding as string).buffer)),
      )
      expect(decoded).toEqual(await expectedVectors(all))
      expect(exchange.settlement?.outcome).toBe('cached')
      expect(exchange.costNanoUsd).toBe(0n)
      expect(exchange.savedNanoUsd).toBe(240n)
    })

    test('a repeated input goes upstream once; a single string and token ids are cached too', async () => {
      const [a, b] = inputs(2)
      const calls = sim.inputs.length
      const { json } = await embed({ input: [a, b, a] })
      expect(sim.inputs.slice(calls)).toEqual([[a!, b!]])
      expect(json.data[2]!.embedding).toEqual(json.data[0]!.embedding)
      expect((await embed({ input: a })).cache).toBe('HIT')
      const tokens = [
        [1, 2, 3],
        [4, 5],
      ]
      expect((await embed({ input: tokens })).cache).toBe('MISS')
      expect((await embed({ input: tokens })).cache).toBe('HIT')
      expect((await embed({ input: tokens, dimensions: 8 })).cache).toBe('MISS')
    })

    test('namespaces hold for embeddings; no-store bypasses the cache', async () => {
      const all = inputs(2)
      await embed({ input: all })
      expect((await embed({ input: all }, await gateway.createKey())).cache).toBe('MISS')
      const response = await fetch(`${gateway.url}/v1/embeddings`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${key}`,
          'content-type': 'application/json',
          'cache-control': 'no-store',
        },
        body: JSON.stringify({ model: 'sim-embed-1', input: all }),
      })
      expect(response.headers.get('x-cache')).toBe('BYPASS')
    })
  })
}

/** A Redis store under its own key prefix, connected before the gateway takes requests. */
async function connectedStore(prefix: string): Promise<RedisStore> {
  const store = new RedisStore({ url: await requireRedis(), keyPrefix: prefix })
  if (!(await store.waitUntilAvailable(5_000))) throw new Error('Redis did not answer')
  return store
}
