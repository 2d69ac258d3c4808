/**
 * SIGTERM with `server.drain_delay_ms`: readiness turns 503 at once while the listener still
 * serves model requests, so load balancers stop sending before connections are refused; after
 * the delay the drain runs and the process exits 0.
 */
import { afterAll, expect, test } from 'bun:test'
import { type GatewayProcess, startGatewayProcess } from './support/process'

let gateway: GatewayProcess | undefined

afterAll(async () => {
  // Removes the temp folder; the process has exited already unless the test failed.
  await gateway?.kill()
})

test('SIGTERM: not ready but still serving for drain_delay_ms, then a clean exit', async () => {
  gateway = await startGatewayProcess({ file: { server: { drain_delay_ms: 1000 } } })
  const { key } = await gateway.createKey('drain-user', 'pro')
  const signalled = performance.now()
  process.kill(gateway.pid, 'SIGTERM')

  let ready = await fetch(`${gateway.url}/health/ready`)
  while (ready.status === 200 && performance.now() - signalled < 1000) {
    await Bun.sleep(20)
    ready = await fetch(`${gateway.url}/health/ready`)
  }
  expect(ready.status).toBe(503)
  const report = (await ready.json()) as { components: Record<string, { message: string }> }
  expect(report.components.lifecycle?.message).toBe('draining')

  const answer = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'sim-1', messages: [{ role: 'user', content: 'still there?' }] }),
  })
  expect(answer.status).toBe(200)
  expect(((await answer.json()) as { object: string }).object).toBe('chat.completion')
  // Both answers came within the delay: the listener was still open while readiness failed.
  expect(performance.now() - signalled).toBeLessThan(1000)

  expect(await gateway.exited).toBe(0)
  expect(performance.now() - signalled).toBeGreaterThanOrEqual(1000)
}, 30_000)
