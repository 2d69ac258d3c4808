/**
 * The operator's side of the breakers, through the real app: `/admin/breakers` lists every
 * configured target, resets close one or all (admin key required), and `/health/ready`
 * reports degraded while any breaker is open, naming it.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { BreakerService } from '../plugins/breaker'
import { createApp } from '../src/app'
import { buildConfig } from '../src/config'
import { setLogLevel } from '../src/log'
import { createRuntime, type Runtime } from '../src/runtime'
import { adminKey, tempDataDir } from './support/gateway'

let url: string
let runtime: Runtime
let app: ReturnType<typeof createApp>
let breakers: BreakerService
const slashed = 'up:org/model-a'

beforeAll(async () => {
  setLogLevel('silent')
  const config = buildConfig(
    { ADMIN_API_KEY: adminKey, DATA_DIR: tempDataDir() },
    {
      providers: { up: { type: 'openai', base_url: 'http://127.0.0.1:9/v1' } },
      models: {
        'm-1': { provider: 'up', upstream_model: 'org/model-a', pricing: { input: 1, output: 1 } },
        'm-2': { provider: 'up', pricing: { input: 1, output: 1 } },
      },
      breaker: { providers: { up: { failure_threshold: 3 } } },
    },
  )
  runtime = await createRuntime(config)
  app = createApp(runtime).listen({ port: 0, hostname: '127.0.0.1' })
  url = `http://127.0.0.1:${app.server!.port}`
  breakers = app.decorator.breakers
})
afterAll(async () => {
  await app.stop(true)
  await runtime.close()
})

const admin = (path: string, method = 'GET', key = adminKey) =>
  fetch(`${url}/admin${path}`, { method, headers: { authorization: `Bearer ${key}` } })

function trip(target: string) {
  for (let i = 0; i < 3; i++) breakers.record(target, 'f', false, 'http 502')
}

describe('breaker admin', () => {
  test('lists every configured target with its policy from config', async () => {
    const response = await admin('/breakers')
    expect(response.status).toBe(200)
    const body = (await response.json()) as { shared: boolean; data: Array<Record<string, unknown>> }
    expect(body.shared).toBe(false)
    expect(body.data.map((item) => item.target)).toEqual(['sim:sim-1', 'sim:sim-embed-1', 'up:m-2', slashed])
    expect(body.data[0]).toEqual({
      target: 'sim:sim-1',
      state: 'closed',
      failures: 0,
      calls: 0,
      window_ms: 60_000,
      last_failure_at: null,
      last_failure: null,
      opened_at: null,
      next_probe_at: null,
      cooldown_ms: 30_000,
      probes_in_flight: 0,
      half_open_successes: 0,
    })
  })

  test('an open breaker shows in the list and makes readiness degraded; a reset closes it', async () => {
    trip(slashed)
    const listed = (await (await admin('/breakers')).json()) as { data: Array<Record<string, unknown>> }
    const item = listed.data.find((entry) => entry.target === slashed)!
    expect(item).toMatchObject({ state: 'open', failures: 3, calls: 3, last_failure: 'http 502' })
    expect(typeof item.next_probe_at).toBe('string')

    const ready = await fetch(`${url}/health/ready`)
    expect(ready.status).toBe(200)
    const health = (await ready.json()) as {
      status: string
      components: Record<string, { status: string; message: string }>
    }
    expect(health.status).toBe('degraded')
    expect(health.components.breakers?.status).toBe('degraded')
    expect(health.components.breakers?.message).toContain(`${slashed} open`)

    const reset = await admin(`/breakers/${encodeURIComponent(slashed)}/reset`, 'POST')
    expect(reset.status).toBe(200)
    expect(await reset.json()).toMatchObject({ target: slashed, state: 'closed', failures: 0 })
    const after = (await (await fetch(`${url}/health/ready`)).json()) as {
      components: Record<string, { status: string }>
    }
    expect(after.components.breakers?.status).toBe('healthy')
  })

  test('reset all closes every breaker', async () => {
    trip('up:m-2')
    trip('sim:sim-1')
    const response = await admin('/breakers/reset', 'POST')
    expect(response.status).toBe(200)
    const body = (await response.json()) as { data: Array<{ state: string }> }
    expect(body.data.every((item) => item.state === 'closed')).toBe(true)
  })

  test('an unknown target is a 404 problem; no admin key is a 401', async () => {
    const missing = await admin('/breakers/nope%3Anothing/reset', 'POST')
    expect(missing.status).toBe(404)
    expect(missing.headers.get('content-type')).toContain('application/problem+json')
    expect(await missing.json()).toMatchObject({ code: 'breaker_not_found' })
    expect((await admin('/breakers', 'GET', 'wrong-key-0123456789')).status).toBe(401)
    expect((await fetch(`${url}/admin/breakers/reset`, { method: 'POST' })).status).toBe(401)
  })
})
