/**
 * The cache's own share of a hit, without HTTP, auth, quota or any other plugin: `lookup`
 * and `claim` of a stored answer through the service, one after another in this process,
 * on the memory store and on Redis. What a hit costs the gateway beyond the request it
 * serves anyway: key hashing, the one round trip of reads, the header check.
 */
import { cache } from '../plugins/cache'
import { Exchange, SettlementHub } from '../plugins/exchange'
import { MemoryStore, RedisStore, type Store } from '../plugins/store'

export interface LookupRun {
  store: 'memory' | 'redis'
  lookups: number
  /** Wall time per lookup + claim, in µs. */
  p50Us: number
  p99Us: number
  /** CPU time of this process per lookup + claim, in µs. */
  cpuUs: number
}

const body = {
  model: 'bench-1',
  temperature: 0,
  max_tokens: 8,
  messages: [{ role: 'user', content: 'Say hello in eight words.' }],
}
const answer = {
  id: 'chatcmpl-bench',
  object: 'chat.completion' as const,
  created: 0,
  model: 'bench-1',
  choices: [{ index: 0, message: { role: 'assistant', content: 'hello '.repeat(8) }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 10, completion_tokens: 8, total_tokens: 18 },
}
const directives = { noStore: false, noCache: false, maxAgeSeconds: null }
const principal = { keyId: 'k', userId: 'bench', tier: 'enterprise', overrides: {} }

export async function lookupAlone(
  kind: 'memory' | 'redis',
  redisUrl: string,
  count = 5000,
): Promise<LookupRun> {
  const store: Store =
    kind === 'redis'
      ? new RedisStore({ url: redisUrl, keyPrefix: `tg-bench-lookup:${Date.now()}:` })
      : new MemoryStore()
  if (store instanceof RedisStore && !(await store.waitUntilAvailable(5_000)))
    throw new Error('Redis does not answer')
  const hub = new SettlementHub()
  const service = cache({ store, hub, responses: { ttlMs: 60_000 }, staleMs: 0 }).decorator.cache
  const signal = new AbortController().signal
  const exchange = () => {
    const opened = new Exchange(hub, {
      id: crypto.randomUUID(),
      method: 'POST',
      path: '/v1/chat/completions',
    })
    opened.principal = principal
    return opened
  }
  const first = exchange()
  await service.responses.claim(first, await service.responses.lookup(first, body, directives), signal)
  service.responses.record(first, answer)
  first.settle({ outcome: 'ok', status: 200 })
  await first.settled
  const times = new Float64Array(count)
  const cpuBefore = process.cpuUsage()
  for (let i = 0; i < count; i++) {
    const started = performance.now()
    const current = exchange()
    const hit = await service.responses.claim(
      current,
      await service.responses.lookup(current, body, directives),
      signal,
    )
    if (!hit) throw new Error('the bench entry was not a hit')
    times[i] = (performance.now() - started) * 1000
  }
  const cpu = process.cpuUsage(cpuBefore)
  await service.close()
  await store.close()
  times.sort()
  const at = (q: number) => Math.round(times[Math.ceil(q * count) - 1] ?? 0)
  return {
    store: kind,
    lookups: count,
    p50Us: at(0.5),
    p99Us: at(0.99),
    cpuUs: Math.round((cpu.user + cpu.system) / count),
  }
}
