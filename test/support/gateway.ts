/**
 * Starts a real gateway on a spare port for a test: the app from createApp, a runtime
 * built from a Config (env + file object), and a recorder of settled exchanges.
 */
import { tmpdir } from 'node:os'
import type { Exchange } from '../../plugins/exchange'
import { createApp } from '../../src/app'
import { buildConfig, type Env } from '../../src/config'
import { setLogLevel } from '../../src/log'
import { createRuntime, type Runtime, type RuntimeOverrides } from '../../src/runtime'
import { requirePostgres } from './db'

export const adminKey = 'test-admin-key-0123456789'

export interface Gateway {
  url: string
  runtime: Runtime
  /** Every exchange settled so far, in settlement order. */
  settled: Exchange[]
  /** The settled exchanges with request id `id` (one, unless an exchange settled twice). */
  settledFor(id: string): Exchange[]
  /** Creates an API key through the admin API and returns its plaintext. */
  createKey(user?: string, tier?: string): Promise<string>
  stop(): Promise<void>
}

export interface GatewayOptions extends RuntimeOverrides {
  env?: Env
  file?: Record<string, unknown>
}

/**
 * Tests of the other plugins script upstream faults one request at a time: a retry would
 * consume the next request's fault and a breaker would refuse requests before they reach the
 * simulator. Tests of resilience pass a `breaker` section of their own.
 */
const scriptedFaults = {
  failure_threshold: 0,
  failure_rate: 0,
  retries: { max_retries: 0, backoff_base_ms: 250, backoff_cap_ms: 4000, retry_after_cap_ms: 5000 },
}

/**
 * The Config a test gateway runs with: the admin key, a data folder and a Redis key prefix of
 * its own (so its counters and leases, global ones too, stay apart from every other test and
 * benchmark sharing the Redis), scripted-fault resilience unless the test sets `breaker`, and a
 * ledger shutdown bounded well inside a test hook's timeout unless the test sets `ledger`.
 */
/** Stopping a test gateway flushes its ledger within a hook's time, whatever is left pending. */
const quickShutdown = { shutdown_timeout_ms: 2000 }

export function gatewayConfig(env: Env, file: Record<string, unknown>) {
  return buildConfig(
    {
      ADMIN_API_KEY: adminKey,
      DATA_DIR: tempDataDir(),
      REDIS_KEY_PREFIX: `tgt:${crypto.randomUUID()}:`,
      ...env,
    },
    { breaker: scriptedFaults, ledger: quickShutdown, ...file },
  )
}

export async function startGateway({
  env = {},
  file = {},
  ...overrides
}: GatewayOptions = {}): Promise<Gateway> {
  setLogLevel('silent')
  // Postgres unless a test asks otherwise: a PGlite per gateway costs seconds to open on a
  // loaded machine (the embedded path has tests of its own).
  const database = overrides.database || env.DATABASE_URL ? {} : { DATABASE_URL: await requirePostgres() }
  const config = gatewayConfig({ ...database, ...env }, file)
  const runtime = await createRuntime(config, overrides)
  const settled: Exchange[] = []
  runtime.settlements.subscribe('trace', (exchange) => {
    settled.push(exchange)
  })
  const app = listenOnFreshPort(createApp(runtime))
  const url = `http://127.0.0.1:${app.server!.port}`
  return {
    url,
    runtime,
    settled,
    settledFor: (id) => settled.filter((exchange) => exchange.id === id),
    async createKey(user = `user-${crypto.randomUUID().slice(0, 8)}`, tier = 'enterprise') {
      const response = await fetch(`${url}/admin/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ user_id: user, name: 'test', tier }),
      })
      if (response.status !== 201)
        throw new Error(`key creation failed: ${response.status} ${await response.text()}`)
      return ((await response.json()) as { key: string }).key
    },
    async stop() {
      await app.stop(true)
      // As src/main.ts does: the ledger writes its last batch while the database is open.
      await app.decorator.ledger.close()
      await runtime.close()
    },
  }
}

/**
 * Every test file runs in one process, whose fetch keeps connections alive per host:port. A
 * gateway that gets the port of one stopped a moment ago can meet a pooled socket the old
 * server closed (ECONNRESET), so a port is never used twice in a process.
 */
const usedPorts = new Set<number>()
export function listenOnFreshPort(app: ReturnType<typeof createApp>) {
  for (;;) {
    app.listen({ port: 0, hostname: '127.0.0.1' })
    const port = app.server!.port!
    if (!usedPorts.has(port)) {
      usedPorts.add(port)
      return app
    }
    app.server!.stop(true)
  }
}

export function tempDataDir(): string {
  return `${tmpdir()}/tollgate-test-${crypto.randomUUID()}`
}

/** Resolves when `predicate` holds, polling briefly; fails the test after `timeoutMs`. */
export async function eventually(predicate: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await Bun.sleep(5)
  }
}

/** A streaming response's SSE text, read as it arrives and only as far as a test asks. */
export interface SseReader {
  /** The response's `x-request-id`. */
  id: string
  /** Everything read so far. */
  text: string
  /** Whether the body has ended. */
  ended: boolean
  /** Reads until `predicate` holds on the text so far, or the stream ends; returns the text. */
  readUntil(predicate: (text: string) => boolean): Promise<string>
  readToEnd(): Promise<string>
  cancel(): Promise<void>
}

export function sseReader(response: Response): SseReader {
  const reader = response.body!.getReader()
  const decoder = new TextDecoder()
  const stream: SseReader = {
    id: response.headers.get('x-request-id')!,
    text: '',
    ended: false,
    async readUntil(predicate) {
      while (!stream.ended && !predicate(stream.text)) {
        const { done, value } = await reader.read()
        if (done) stream.ended = true
        else stream.text += decoder.decode(value, { stream: true })
      }
      return stream.text
    },
    readToEnd: () => stream.readUntil(() => false),
    cancel: () => reader.cancel(),
  }
  return stream
}
