/**
 * Pricing: every model has a price per 1M input, output and cached-input tokens, or is
 * explicitly free; a model with neither stops startup with a message naming it, never
 * silently costing zero. A free model's requests are still recorded, at zero cost, and a
 * priced one is charged for exactly the usage the upstream reported.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { sql } from 'drizzle-orm'
import { queryRows } from '../db/client'
import { buildConfig, ConfigError } from '../src/config'
import { type CostGateway, startCostGateway } from './support/cost'

describe('pricing in config', () => {
  test('a model without pricing is rejected at startup, naming the model', () => {
    expect(() => buildConfig({}, { models: { 'mystery-1': { provider: 'sim' } } })).toThrow(
      new ConfigError('config: models.mystery-1.pricing: required (or mark the model free: true)'),
    )
  })

  test('a model marked free needs no pricing', () => {
    const config = buildConfig({}, { models: { 'local-1': { provider: 'sim', free: true } } })
    expect(config.models['local-1']!.pricing).toBeNull()
  })

  test('negative or unknown price fields are rejected', () => {
    expect(() =>
      buildConfig({}, { models: { m: { provider: 'sim', pricing: { input: -1, output: 1 } } } }),
    ).toThrow(ConfigError)
    expect(() =>
      buildConfig(
        {},
        { models: { m: { provider: 'sim', pricing: { input: 1, output: 1, per_request: 1 } } } },
      ),
    ).toThrow(/models\.m\.pricing\.per_request: is not a known setting/)
  })

  test('the ledger section is validated like every other', () => {
    expect(buildConfig({ DATA_DIR: '/data' }, {}).ledger).toEqual({
      enabled: true,
      flushIntervalMs: 250,
      batchSize: 1000,
      maxBacklog: 100_000,
      overflow: 'reject',
      retryInitialMs: 100,
      retryMaxMs: 5000,
      shutdownTimeoutMs: 10_000,
      spillDir: '/data/ledger-spill',
      budgetRefreshMs: 5000,
    })
    expect(buildConfig({}, { ledger: { overflow: 'drop', spill_dir: null } }).ledger).toMatchObject({
      overflow: 'drop',
      spillDir: null,
    })
    expect(() => buildConfig({}, { ledger: { overflow: 'spill' } })).toThrow(/ledger\.overflow/)
    expect(() => buildConfig({}, { ledger: { batch_size: 0 } })).toThrow(/ledger\.batch_size/)
  })
})

describe('pricing through the gateway', () => {
  let gateway: CostGateway
  let key: string

  beforeAll(async () => {
    gateway = await startCostGateway({
      file: {
        models: {
          'local-1': { provider: 'sim', free: true },
          'priced-1': { provider: 'sim', pricing: { input: 3, output: 15, cached_input: 0.3 } },
        },
        ledger: { flush_interval_ms: 20 },
      },
    })
    key = (await gateway.createKey('pricing-user')).key
  }, 30_000)
  afterAll(() => gateway?.stop())

  const chat = async (model: string) => {
    const response = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model,
        messages: [{ role: 'user', content: 'price me please' }],
        max_tokens: 7,
      }),
    })
    expect(response.status).toBe(200)
    const body = (await response.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }
    return { id: response.headers.get('x-request-id')!, usage: body.usage }
  }

  const rowOf = async (id: string) => {
    const deadline = performance.now() + 5000
    for (;;) {
      const [row] = await queryRows<{ cost: string; served_model: string; prompt_tokens: number }>(
        gateway.runtime.database.db,
        sql`select cost_nano_usd::text as cost, served_model, prompt_tokens from usage_events where request_id = ${id}`,
      )
      if (row) return row
      if (performance.now() > deadline) throw new Error(`no ledger row for ${id}`)
      await Bun.sleep(20)
    }
  }

  test('a free model is recorded at zero cost', async () => {
    const { id, usage } = await chat('local-1')
    expect(await rowOf(id)).toEqual({
      cost: '0',
      served_model: 'local-1',
      prompt_tokens: usage.prompt_tokens,
    })
  })

  test('a priced model is charged exactly for the reported usage', async () => {
    const { id, usage } = await chat('priced-1')
    // $3 and $15 per 1M tokens: 3000 and 15000 nano-USD per token, so no rounding at all.
    const expected = BigInt(usage.prompt_tokens) * 3000n + BigInt(usage.completion_tokens) * 15_000n
    expect(await rowOf(id)).toEqual({
      cost: expected.toString(),
      served_model: 'priced-1',
      prompt_tokens: usage.prompt_tokens,
    })
  })
})
