/**
 * The metrics API the other plugins report through, driven directly: quota decisions and
 * fallback, breaker events and states, the ledger's flushes and totals, the cache's totals
 * read at each scrape, dependency checks (up, down, hung), and what a settled Exchange with
 * upstream phases records. Every value is checked exactly in the parsed exposition.
 */
import { describe, expect, test } from 'bun:test'
import { Exchange, priceFromUsdPerMillion, SettlementHub } from '../plugins/exchange'
import { GatewayMetrics } from '../plugins/observability'
import { type Family, parseExposition, sampleValue } from './support/exposition'

function newMetrics(overrides: Partial<ConstructorParameters<typeof GatewayMetrics>[0]> = {}) {
  return new GatewayMetrics({
    version: '9.9.9',
    models: ['m-1', 'm-2'],
    tiers: ['free', 'pro'],
    processMetrics: false,
    dailyCostAlertUsd: null,
    dependencies: [],
    dependencyTimeoutMs: 50,
    ...overrides,
  })
}

const scrape = async (metrics: GatewayMetrics) => parseExposition(await metrics.render())
const value = (families: Map<string, Family>, name: string, labels: Record<string, string> = {}) =>
  sampleValue(families, name, labels)

describe('quota', () => {
  test('decisions by limit and outcome, check latency, fallback state', async () => {
    const metrics = newMetrics()
    metrics.quotaDecision({ limit: 'all', outcome: 'admitted' }, 0.002)
    metrics.quotaDecision({ limit: 'all', outcome: 'admitted' }, 0.004)
    metrics.quotaDecision({ limit: 'requests_per_minute', outcome: 'denied' }, 0.001)
    metrics.quotaFallback(true)
    let families = await scrape(metrics)
    expect(value(families, 'tollgate_quota_decisions_total', { limit: 'all', outcome: 'admitted' })).toBe(2)
    expect(
      value(families, 'tollgate_quota_decisions_total', { limit: 'requests_per_minute', outcome: 'denied' }),
    ).toBe(1)
    expect(value(families, 'tollgate_quota_check_duration_seconds_count')).toBe(3)
    expect(value(families, 'tollgate_quota_check_duration_seconds_sum')).toBeCloseTo(0.007, 9)
    expect(value(families, 'tollgate_quota_check_duration_seconds_bucket', { le: '0.0025' })).toBe(2)
    expect(value(families, 'tollgate_quota_fallback_active')).toBe(1)
    metrics.quotaFallback(false)
    families = await scrape(metrics)
    expect(value(families, 'tollgate_quota_fallback_active')).toBe(0)
  })
})

describe('breakers', () => {
  test('events become counters; states are read at each scrape', async () => {
    const metrics = newMetrics()
    const views = [
      { target: 'openai:m-1', state: 'open' },
      { target: 'sim:m-2', state: 'closed' },
    ]
    metrics.readBreakers(() => views)
    metrics.breakerEvent({ type: 'transition', target: 'openai:m-1', from: 'closed', to: 'open' })
    metrics.breakerEvent({ type: 'rejected', target: 'openai:m-1' })
    metrics.breakerEvent({ type: 'rejected', target: 'openai:m-1' })
    metrics.breakerEvent({ type: 'retry', target: 'openai:m-1' })
    metrics.breakerEvent({ type: 'timeout', target: 'openai:m-1', kind: 'ttft' })
    metrics.breakerEvent({ type: 'fallback', servedBy: 'm-2' })
    metrics.breakerEvent({ type: 'stale', model: 'm-1' })
    let families = await scrape(metrics)
    const target = 'openai:m-1'
    expect(value(families, 'tollgate_breaker_state', { target, state: 'open' })).toBe(1)
    expect(value(families, 'tollgate_breaker_state', { target, state: 'closed' })).toBe(0)
    expect(value(families, 'tollgate_breaker_state', { target: 'sim:m-2', state: 'closed' })).toBe(1)
    expect(
      value(families, 'tollgate_breaker_transitions_total', { target, from: 'closed', to: 'open' }),
    ).toBe(1)
    expect(value(families, 'tollgate_breaker_rejections_total', { target })).toBe(2)
    expect(value(families, 'tollgate_upstream_retries_total', { target })).toBe(1)
    expect(value(families, 'tollgate_upstream_timeouts_total', { target, kind: 'ttft' })).toBe(1)
    expect(value(families, 'tollgate_upstream_fallbacks_total', { model: 'm-2' })).toBe(1)
    expect(value(families, 'tollgate_stale_answers_total', { model: 'm-1' })).toBe(1)
    views[0]!.state = 'half_open'
    families = await scrape(metrics)
    expect(value(families, 'tollgate_breaker_state', { target, state: 'open' })).toBe(0)
    expect(value(families, 'tollgate_breaker_state', { target, state: 'half_open' })).toBe(1)
  })
})

describe('ledger', () => {
  test('flush durations, and backlog, writes, failures and drops read from its totals', async () => {
    const metrics = newMetrics()
    const totals = { backlog: 40, written: 100, flushFailures: 1, dropped: 0 }
    metrics.readLedger(() => totals)
    metrics.ledgerFlush({ ms: 12 })
    metrics.ledgerFlush({ ms: 30 })
    let families = await scrape(metrics)
    expect(value(families, 'tollgate_ledger_backlog')).toBe(40)
    expect(value(families, 'tollgate_ledger_events_written_total')).toBe(100)
    expect(value(families, 'tollgate_ledger_flush_failures_total')).toBe(1)
    expect(value(families, 'tollgate_ledger_events_dropped_total')).toBe(0)
    expect(value(families, 'tollgate_ledger_flush_duration_seconds_count')).toBe(2)
    expect(value(families, 'tollgate_ledger_flush_duration_seconds_bucket', { le: '0.025' })).toBe(1)
    Object.assign(totals, { backlog: 0, written: 140, flushFailures: 3 })
    families = await scrape(metrics)
    expect(value(families, 'tollgate_ledger_backlog')).toBe(0)
    expect(value(families, 'tollgate_ledger_events_written_total')).toBe(140)
    expect(value(families, 'tollgate_ledger_flush_failures_total')).toBe(3)
  })
})

describe('cache', () => {
  test("the cache's running totals become counters that only grow", async () => {
    const metrics = newMetrics()
    const stats = {
      lookups: { response: { hit: 3, miss: 2, bypass: 0 }, embedding: { hit: 5, miss: 1 } },
      stored: { response: { entries: 2, bytes: 900 }, embedding: { entries: 1, bytes: 6000 } },
      oversize: 1,
    }
    metrics.readCache(() => stats)
    metrics.cacheLookup('response', 'stale')
    let families = await scrape(metrics)
    const lookups = (cache: string, result: string) =>
      value(families, 'tollgate_cache_lookups_total', { cache, result })
    expect([lookups('response', 'hit'), lookups('response', 'miss'), lookups('response', 'stale')]).toEqual([
      3, 2, 1,
    ])
    expect([lookups('embedding', 'hit'), lookups('embedding', 'miss')]).toEqual([5, 1])
    expect(value(families, 'tollgate_cache_stores_total', { cache: 'embedding' })).toBe(1)
    expect(value(families, 'tollgate_cache_stored_bytes_total', { cache: 'response' })).toBe(900)
    expect(value(families, 'tollgate_cache_oversize_total')).toBe(1)
    stats.lookups.response.hit = 10
    families = await scrape(metrics)
    expect(lookups('response', 'hit')).toBe(10)
    // A source whose totals went down restarted: everything it reports now is new.
    stats.lookups.response.hit = 4
    families = await scrape(metrics)
    expect(lookups('response', 'hit')).toBe(14)
  })
})

describe('dependencies', () => {
  test('up with a round trip, down when the check fails or hangs past the timeout', async () => {
    const metrics = newMetrics({
      dependencies: [
        { name: 'database', ping: async () => 1 },
        { name: 'redis', ping: () => Promise.reject(new Error('ECONNREFUSED')) },
        { name: 'hung', ping: () => new Promise(() => {}) },
      ],
    })
    const started = performance.now()
    const families = await scrape(metrics)
    expect(performance.now() - started).toBeLessThan(1000)
    expect(value(families, 'tollgate_dependency_up', { dependency: 'database' })).toBe(1)
    expect(value(families, 'tollgate_dependency_up', { dependency: 'redis' })).toBe(0)
    expect(value(families, 'tollgate_dependency_up', { dependency: 'hung' })).toBe(0)
    expect(value(families, 'tollgate_dependency_latency_seconds', { dependency: 'database' })).toBeLessThan(
      0.05,
    )
  })
})

describe('a settled exchange', () => {
  function settledExchange(): Exchange {
    const exchange = new Exchange(new SettlementHub(), {
      id: 'req-0001',
      method: 'POST',
      path: '/v1/x',
      startedAt: performance.now() - 100,
    })
    Object.assign(exchange, {
      route: '/v1/chat/completions',
      requestedModel: 'm-1',
      servedModel: 'm-2',
      provider: 'sim',
      attempts: 2,
      principal: { keyId: 'k', userId: 'alice', tier: 'pro', overrides: {} },
      usage: { promptTokens: 10, completionTokens: 20, cachedTokens: 4 },
      price: priceFromUsdPerMillion({ input: 1, output: 2, cached_input: 0.5 }),
    })
    const t = exchange.startedAt
    exchange.phases.push(
      { name: 'upstream', start: t + 1, end: t + 11, attributes: { model: 'm-1', error: 'http 503' } },
      { name: 'upstream', start: t + 12, end: t + 42, attributes: { model: 'm-2', fallback_step: 1 } },
    )
    exchange.settle({ outcome: 'ok', status: 200 })
    return exchange
  }

  test('its outcome, tokens, cost, each upstream attempt, and the overhead without them', async () => {
    const metrics = newMetrics()
    const exchange = settledExchange()
    metrics.recordExchange(exchange)
    const families = await scrape(metrics)
    const labels = { model: 'm-2', tier: 'pro' }
    expect(
      value(families, 'tollgate_model_requests_total', {
        model: 'm-1',
        served_model: 'm-2',
        tier: 'pro',
        outcome: 'ok',
      }),
    ).toBe(1)
    expect(value(families, 'tollgate_tokens_total', { ...labels, type: 'input' })).toBe(10)
    expect(value(families, 'tollgate_tokens_total', { ...labels, type: 'output' })).toBe(20)
    expect(value(families, 'tollgate_tokens_total', { ...labels, type: 'cached' })).toBe(4)
    expect(value(families, 'tollgate_cost_usd_total', labels)).toBeCloseTo(
      Number(exchange.costNanoUsd) / 1e9,
      15,
    )
    expect(
      value(families, 'tollgate_upstream_duration_seconds_count', { provider: 'sim', model: 'm-1' }),
    ).toBe(1)
    expect(
      value(families, 'tollgate_upstream_duration_seconds_sum', { provider: 'sim', model: 'm-2' }),
    ).toBeCloseTo(0.03, 9)
    const overhead = value(families, 'tollgate_gateway_overhead_seconds_sum', {
      route: '/v1/chat/completions',
    })
    expect(overhead).toBeCloseTo((exchange.latencyMs - 40) / 1000, 9)
  })

  test('names no user, and unknown models or tiers read `other`', async () => {
    const metrics = newMetrics()
    const exchange = settledExchange()
    exchange.requestedModel = 'free text the client sent'
    exchange.principal = { keyId: 'k', userId: 'alice', tier: 'secret-tier', overrides: {} }
    metrics.recordExchange(exchange)
    const text = await metrics.render()
    expect(text).not.toContain('alice')
    expect(text).not.toContain('free text')
    expect(text).toContain(
      'tollgate_model_requests_total{model="other",served_model="m-2",tier="other",outcome="ok"} 1',
    )
  })
})

test('the daily cost alert threshold is exported only when configured', async () => {
  expect((await scrape(newMetrics())).has('tollgate_cost_alert_daily_usd')).toBe(false)
  const families = await scrape(newMetrics({ dailyCostAlertUsd: 250 }))
  expect(value(families, 'tollgate_cost_alert_daily_usd')).toBe(250)
})
