/**
 * Nothing of an upstream call outlives it. Every call makes an abort controller and signal
 * (the attempt's CallTimer), and Bun keeps an `AbortSignal.any()` signal that has an abort
 * listener alive as long as its sources' native objects exist, which a listener closing over
 * its own controller makes forever: the soak's gateways grew by one CallTimer, its signals,
 * promises and closures (~65 objects) per upstream call. Counted here after a full GC, over
 * answers, streams, upstream faults and clients leaving mid-stream.
 */

import { heapStats } from 'bun:jsc'
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { type SimFault, type SimServer, startSimServer } from '../src/upstream/sim-server'
import { chatRequest, newExchange, type Rig, rig } from './support/resilience'

let sim: SimServer
let r: Rig

beforeAll(async () => {
  sim = await startSimServer({ maxTokens: 8 })
  r = rig({
    file: {
      providers: { up: { type: 'openai', base_url: sim.url } },
      models: { 'm-1': { provider: 'up', upstream_model: 'sim-1', free: true } },
      // The breaker stays closed through the faults, so every call reaches the upstream.
      breaker: { failure_threshold: 0, failure_rate: 0, retries: { max_retries: 0 } },
    },
  })
})
afterAll(async () => {
  r.close()
  await sim.stop()
})

function live(): { controllers: number; signals: number } {
  Bun.gc(true)
  const counts = heapStats().objectTypeCounts
  return { controllers: counts.AbortController ?? 0, signals: counts.AbortSignal ?? 0 }
}

/** Each round: a faulty or clean JSON call, then a stream read to its end or left after one chunk. */
const faults: Array<SimFault | null> = [
  null,
  { status: 500 },
  { fail_after_chunks: 2 },
  { reset: true },
  null,
]

test('upstream calls leave no abort controllers or signals behind', async () => {
  const rounds = 200
  const before = live()
  for (let i = 0; i < rounds; i++) {
    // The route's per-request signal: one client, two calls.
    const client = new AbortController()
    const fault = faults[i % faults.length]
    if (fault) sim.addFaults([fault, fault])
    await r.resilience.chat(newExchange(), chatRequest('m-1'), { signal: client.signal }).catch(() => {})
    const leaves = i % faults.length === faults.length - 1
    try {
      const opened = await r.resilience.chatStream(newExchange(), chatRequest('m-1'), {
        signal: client.signal,
      })
      if (opened.stale) throw new Error('expected a live stream')
      const { iterator } = opened.value
      if (leaves) {
        await iterator.next()
        client.abort()
        await iterator.return?.()
      } else while (!(await iterator.next()).done);
    } catch {
      // A fault that broke the stream: what it leaves behind is what is counted.
    }
  }
  await Bun.sleep(50)
  const after = live()
  // With AbortSignal.any in CallTimer (before d15715c) 123 controllers were left.
  expect(after.controllers - before.controllers).toBeLessThan(rounds / 10)
  expect(after.signals - before.signals).toBeLessThan(rounds / 10)
})
