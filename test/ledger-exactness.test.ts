/**
 * Exactness, on Postgres and on PGlite: 1,000 requests through the gateway (chat and
 * embeddings, JSON and streams, three priced models, upstream errors, streams cut mid-way,
 * clients that disconnect, repeated deterministic requests the cache may answer, a reused
 * client request id), plus cache hits and prompt-cache hits settled straight through the hub.
 * Then `usage_events` holds exactly one row per request, every row's cost equals the cost
 * computed here, independently, from the simulator's usage and the price table, to the
 * nano-dollar, and `daily_usage` equals the aggregate of `usage_events`.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { sql } from 'drizzle-orm'
import { queryRows } from '../db/client'
import { Exchange, priceFromUsdPerMillion, type Usage } from '../plugins/exchange'
import { estimatePromptTokens } from '../src/routes/usage'
import type { ChatRequest } from '../src/upstream/provider'
import { type SimServer, startSimServer } from '../src/upstream/sim-server'
import { SimulatorProvider } from '../src/upstream/simulator'
import { type CostGateway, ledgerTotals, rollupMismatches, startCostGateway } from './support/cost'
import { freshPostgresDatabase, type ThrowawayPostgres } from './support/db'
import { noLimits } from './support/quota'

/** USD per 1M tokens: input, output, cached input. Strings, so the oracle never sees a float. */
const priceTable: Record<string, [string, string, string?]> = {
  'remote-a': ['0.15', '0.6', '0.075'],
  'remote-b': ['2.5', '10'],
  'remote-embed': ['0.02', '0'],
  'faulty-a': ['1.1', '4.4'],
  'sim-1': ['0.5', '1.5', '0.25'],
}

/** The independent oracle: exact integer arithmetic, one rounding (half up) per request. */
function nanoPerMillion(usd: string): bigint {
  const [whole, fraction = ''] = usd.split('.')
  return BigInt(whole!) * 1_000_000_000n + BigInt(fraction.padEnd(9, '0'))
}
function expectedCost(model: string, usage: Usage): bigint {
  const [input, output, cachedInput = input] = priceTable[model]!.map((p) => nanoPerMillion(p!)) as bigint[]
  const cached = BigInt(usage.cachedTokens)
  const uncached = BigInt(usage.promptTokens) - cached
  const total = uncached * input! + cached * cachedInput! + BigInt(usage.completionTokens) * output!
  return (total + 500_000n) / 1_000_000n
}

const oracle = new SimulatorProvider()
const signal = new AbortController().signal
const zero: Usage = { promptTokens: 0, completionTokens: 0, cachedTokens: 0 }

async function simulatedUsage(body: Record<string, unknown>): Promise<Usage> {
  if ('input' in body) {
    const response = await oracle.embeddings(body as never, { signal })
    return { promptTokens: response.usage.prompt_tokens, completionTokens: 0, cachedTokens: 0 }
  }
  const completion = await oracle.chat(body as unknown as ChatRequest, { signal })
  return {
    promptTokens: completion.usage!.prompt_tokens,
    completionTokens: completion.usage!.completion_tokens,
    cachedTokens: 0,
  }
}

interface Expectation {
  requestId: string
  clientId: boolean
  cost: bigint
  saved: bigint
}

/** Content-bearing SSE frames of a relayed stream: what the gateway charges a cut stream for. */
function contentFrames(text: string): number {
  let frames = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith('data: {')) continue
    const frame = JSON.parse(line.slice(6)) as { choices?: Array<{ delta?: { content?: string } }> }
    if (frame.choices?.[0]?.delta?.content) frames++
  }
  return frames
}

async function pool<T>(items: T[], concurrency: number, run: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await run(items[next++]!)
    }),
  )
}

for (const kind of ['postgres', 'pglite'] as const) {
  describe(`ledger exactness on ${kind}`, () => {
    let clean: SimServer
    let faulty: SimServer
    let database: ThrowawayPostgres | null = null
    let gateway: CostGateway
    let key: { id: string; key: string }
    const user = `exact-${kind}`
    const expectations: Expectation[] = []

    beforeAll(async () => {
      clean = await startSimServer({ port: 0 })
      faulty = await startSimServer({ port: 0 })
      database = kind === 'postgres' ? await freshPostgresDatabase() : null
      const pricing = (model: string) => {
        const [input, output, cached] = priceTable[model]!
        return {
          input: Number(input),
          output: Number(output),
          ...(cached ? { cached_input: Number(cached) } : {}),
        }
      }
      gateway = await startCostGateway({
        env: database ? { DATABASE_URL: database.url } : {},
        file: {
          providers: {
            clean: { type: 'openai', base_url: clean.url },
            faulty: { type: 'openai', base_url: faulty.url },
          },
          // The faults are scripted request by request: no retry may consume the next one and
          // no breaker may turn requests away before they reach the simulator.
          breaker: {
            providers: {
              faulty: {
                failure_threshold: 0,
                failure_rate: 0,
                retries: {
                  max_retries: 0,
                  backoff_base_ms: 250,
                  backoff_cap_ms: 4000,
                  retry_after_cap_ms: 5000,
                },
              },
            },
          },
          models: {
            'remote-a': { provider: 'clean', pricing: pricing('remote-a') },
            'remote-b': { provider: 'clean', pricing: pricing('remote-b') },
            'remote-embed': { provider: 'clean', kind: 'embedding', pricing: pricing('remote-embed') },
            'faulty-a': { provider: 'faulty', pricing: pricing('faulty-a') },
          },
          tiers: {
            unlimited: noLimits,
          },
          global: { concurrent: null },
        },
      })
      key = await gateway.createKey(user, 'unlimited')
    }, 30_000)

    afterAll(async () => {
      await gateway?.stop()
      await database?.drop()
      await clean?.stop()
      await faulty?.stop()
    })

    const post = (path: string, body: unknown, init: RequestInit = {}) =>
      fetch(`${gateway.url}${path}`, {
        method: 'POST',
        ...init,
        headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json', ...init.headers },
        body: JSON.stringify(body),
      })

    /** A request the upstream answers in full: expected cost from the oracle (zero if cached). */
    async function served(path: string, body: Record<string, unknown>, clientId?: string) {
      const response = await post(path, body, clientId ? { headers: { 'x-request-id': clientId } } : {})
      const text = await response.text()
      expect(response.status).toBe(200)
      if (body.stream) expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true)
      else {
        const usage = (JSON.parse(text) as { usage: { prompt_tokens: number } }).usage
        expect(usage.prompt_tokens).toBe((await simulatedUsage(body)).promptTokens)
      }
      const cost = expectedCost(body.model as string, await simulatedUsage(body))
      const hit = response.headers.get('x-cache') === 'HIT'
      expectations.push({
        requestId: response.headers.get('x-request-id')!,
        clientId: clientId !== undefined,
        cost: hit ? 0n : cost,
        saved: hit ? cost : 0n,
      })
    }

    const words = (i: number) => `request ${kind} ${i} ${'lorem ipsum dolor '.repeat(i % 7)}`.trim()
    const chat = (i: number, model: string, stream: boolean) => ({
      model,
      messages: [{ role: 'user', content: words(i) }],
      max_tokens: 1 + (i % 20),
      ...(stream
        ? { stream: true, stream_options: { include_usage: model === 'sim-1' || i % 2 === 0 } }
        : {}),
    })

    test('1,000 requests: one row each, every cost exact to the nano-dollar, rollups exact', async () => {
      const cleanWork: Array<() => Promise<void>> = []
      const models = ['remote-a', 'remote-b', 'sim-1']
      for (let i = 0; i < 300; i++)
        cleanWork.push(() => served('/v1/chat/completions', chat(i, models[i % 3]!, false)))
      for (let i = 300; i < 550; i++)
        cleanWork.push(() => served('/v1/chat/completions', chat(i, models[i % 3]!, true)))
      for (let i = 550; i < 650; i++) {
        const input = i % 2 ? words(i) : [words(i), `${words(i)} again`]
        cleanWork.push(() => served('/v1/embeddings', { model: 'remote-embed', input }))
      }
      // Deterministic requests twice in a row: the second is a cache hit when the cache is wired.
      for (let i = 650; i < 700; i++) {
        const body = { ...chat(i, 'remote-a', false), temperature: 0 }
        cleanWork.push(async () => {
          await served('/v1/chat/completions', body)
          await served('/v1/chat/completions', body)
        })
      }
      const reused = `reused-client-id-${kind}-${crypto.randomUUID().slice(0, 8)}`
      for (let i = 700; i < 720; i++)
        cleanWork.push(() => served('/v1/chat/completions', chat(i, 'remote-a', false), reused))

      const faultyWork: Array<() => Promise<void>> = []
      for (let i = 0; i < 80; i++)
        faultyWork.push(async () => {
          faulty.addFaults([{ status: 500 }])
          const body = chat(1000 + i, 'faulty-a', i % 2 === 0)
          const response = await post('/v1/chat/completions', body)
          await response.text()
          const usage = response.status === 200 ? await simulatedUsage(body) : zero
          expectations.push({
            requestId: response.headers.get('x-request-id')!,
            clientId: false,
            cost: expectedCost('faulty-a', usage),
            saved: 0n,
          })
        })
      for (let i = 0; i < 80; i++)
        faultyWork.push(async () => {
          faulty.addFaults([{ fail_after_chunks: 1 + (i % 5) }])
          const body = { ...chat(2000 + i, 'faulty-a', true), max_tokens: 10 }
          const response = await post('/v1/chat/completions', body)
          const text = await response.text()
          expect(text).toContain('"error":{')
          // No usage arrived before the cut: the gateway charges its prompt estimate and the
          // completion tokens it relayed.
          const usage = {
            promptTokens: estimatePromptTokens(body),
            completionTokens: contentFrames(text),
            cachedTokens: 0,
          }
          expectations.push({
            requestId: response.headers.get('x-request-id')!,
            clientId: false,
            cost: expectedCost('faulty-a', usage),
            saved: 0n,
          })
        })
      for (let i = 0; i < 70; i++)
        faultyWork.push(async () => {
          faulty.addFaults([{ stall_after_chunks: { chunks: 2, ms: 10_000 } }])
          const controller = new AbortController()
          const body = { ...chat(3000 + i, 'faulty-a', true), max_tokens: 10 }
          const response = await post('/v1/chat/completions', body, { signal: controller.signal })
          const reader = response.body!.getReader()
          let text = ''
          while (contentFrames(text) < 2) {
            const chunk = await reader.read()
            if (chunk.done) throw new Error(`the stream ended before two content frames: ${text}`)
            text += new TextDecoder().decode(chunk.value)
          }
          controller.abort()
          expectations.push({
            requestId: response.headers.get('x-request-id')!,
            clientId: false,
            cost: expectedCost('faulty-a', {
              promptTokens: estimatePromptTokens(body),
              completionTokens: 2,
              cachedTokens: 0,
            }),
            saved: 0n,
          })
        })

      await Promise.all([pool(cleanWork, 16, (work) => work()), pool(faultyWork, 1, (work) => work())])
      expect(expectations).toHaveLength(1000)

      // Cache hits and provider prompt-cache hits, settled through the hub as the routes do.
      for (let i = 0; i < 50; i++) {
        const model = i % 2 ? 'remote-a' : 'sim-1'
        const exchange = new Exchange(gateway.runtime.settlements, {
          id: `hub-${kind}-${i}-${crypto.randomUUID()}`,
          method: 'POST',
          path: '/v1/chat/completions',
        })
        exchange.route = '/v1/chat/completions'
        exchange.principal = { keyId: key.id, userId: user, tier: 'unlimited', overrides: {} }
        exchange.requestedModel = model
        exchange.servedModel = model
        exchange.provider = 'clean'
        const [input, output, cached] = priceTable[model]!
        exchange.price = priceFromUsdPerMillion({
          input: Number(input),
          output: Number(output),
          ...(cached ? { cached_input: Number(cached) } : {}),
        })
        const usage = {
          promptTokens: 1000 + i * 37,
          completionTokens: 3 + i,
          cachedTokens: i < 30 ? 0 : 640 + i,
        }
        exchange.usage = usage
        const cacheHit = i < 30
        exchange.cacheStatus = cacheHit ? 'HIT' : 'NONE'
        exchange.settle({ outcome: cacheHit ? 'cached' : 'ok', status: 200 })
        const cost = expectedCost(model, usage)
        expectations.push({
          requestId: exchange.id,
          clientId: false,
          cost: cacheHit ? 0n : cost,
          saved: cacheHit ? cost : 0n,
        })
      }

      const db = gateway.runtime.database.db
      const deadline = performance.now() + 20_000
      while ((await ledgerTotals(db)).events < expectations.length && performance.now() < deadline)
        await Bun.sleep(50)
      await Bun.sleep(300)

      const totals = await ledgerTotals(db)
      expect(totals.events).toBe(1050)
      expect(totals.distinctRequests).toBe(1050)
      const rows = await queryRows<{
        request_id: string
        client_request_id: string | null
        cost: string
        saved: string
      }>(
        db,
        sql`select request_id, client_request_id, cost_nano_usd::text as cost, saved_nano_usd::text as saved
            from usage_events`,
      )
      const byId = new Map(rows.map((row) => [row.request_id, row]))
      for (const expectation of expectations.filter((e) => !e.clientId)) {
        const row = byId.get(expectation.requestId)
        expect(row).toBeDefined()
        expect({ id: expectation.requestId, cost: row!.cost, saved: row!.saved }).toEqual({
          id: expectation.requestId,
          cost: expectation.cost.toString(),
          saved: expectation.saved.toString(),
        })
      }
      const reusedRows = rows.filter((row) => row.client_request_id === reused)
      expect(reusedRows).toHaveLength(20)
      expect(new Set(reusedRows.map((row) => row.request_id)).size).toBe(20)

      const expectedTotal = expectations.reduce((sum, e) => sum + e.cost, 0n)
      const expectedSaved = expectations.reduce((sum, e) => sum + e.saved, 0n)
      expect(totals.cost).toBe(expectedTotal)
      expect(totals.saved).toBe(expectedSaved)
      expect(expectedTotal).toBeGreaterThan(0n)

      expect(await rollupMismatches(db)).toEqual([])
      const [rollup] = await queryRows<{ cost: string; requests: string }>(
        db,
        sql`select sum(cost_nano_usd)::text as cost, sum(requests)::text as requests from daily_usage`,
      )
      expect(rollup).toEqual({ cost: expectedTotal.toString(), requests: '1050' })

      const outcomes = await queryRows<{ outcome: string; n: number }>(
        db,
        sql`select outcome, count(*)::int as n from usage_events group by outcome order by outcome`,
      )
      const count = (outcome: string) => outcomes.find((row) => row.outcome === outcome)?.n ?? 0
      expect(count('cancelled')).toBe(70)
      expect(count('error')).toBeGreaterThanOrEqual(80)
      expect(count('cached')).toBeGreaterThanOrEqual(30)
    }, 120_000)
  })
}
