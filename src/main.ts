/**
 * Process entry: config -> runtime -> listen -> graceful shutdown. An invalid config stops
 * here with the field and the problem; a database that does not answer yet is waited for
 * with backoff, and a configured Redis up to `redis.startup_wait_ms`, while the probes say
 * so (src/startup.ts). SIGTERM drains (readiness fails
 * first, for server.drain_delay_ms while the listener still serves; then in-flight requests
 * and streams finish up to the grace period), the cost ledger flushes, and then Redis and
 * the database close.
 */
import { openDatabase } from '../db/client'
import { createDevelopmentKey } from '../plugins/auth'
import { RedisStore } from '../plugins/store'
import { createApp } from './app'
import { ConfigError, loadConfig } from './config'
import { log, setLogLevel } from './log'
import { createConfiguredStore, createRuntime } from './runtime'
import { openWithBackoff, serveStartupProbes, waitUntilAvailable } from './startup'

async function main(): Promise<void> {
  let config: Awaited<ReturnType<typeof loadConfig>>
  try {
    config = await loadConfig()
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    console.error(`tollgate: invalid configuration: ${error.message}`)
    process.exit(78)
  }
  setLogLevel(config.logLevel)
  const lifecycle = { started: false, draining: false }
  const startup = { waitingFor: null, attempts: 0, lastError: null }
  const probes = serveStartupProbes(config.server.port, config.server.host, startup)
  // Created first, so Redis connects in the background while the database is waited for.
  const store = createConfiguredStore(config)
  const database = await openWithBackoff('the database', () => openDatabase(config.database), startup)
  if (store instanceof RedisStore && config.redis.startupWaitMs > 0) {
    const up = await waitUntilAvailable('redis', store, startup, config.redis.startupWaitMs)
    if (!up) log.warn('starting without redis: quotas on their fallback until it answers')
  }
  const runtime = await createRuntime(config, { database, store })
  await probes.stop(true)
  const app = createApp(runtime, { lifecycle }).listen({
    port: config.server.port,
    hostname: config.server.host,
  })
  const server = app.server!
  lifecycle.started = true
  const base = `http://${config.server.host === '0.0.0.0' ? 'localhost' : config.server.host}:${server.port}`
  log.info('tollgate listening', {
    url: base,
    store: runtime.store.kind,
    database: runtime.database.kind,
    config: config.source,
    models: Object.keys(config.models),
  })

  if (!config.production) {
    const key = await createDevelopmentKey(runtime.database.db)
    if (key) printWelcome(base, key)
  }

  let stopping = false
  async function shutdown(signal: string): Promise<void> {
    if (stopping) {
      log.warn('second signal: exiting now', { signal })
      process.exit(1)
    }
    stopping = true
    lifecycle.draining = true
    // Readiness now answers 503 while requests are still served, so load balancers that poll
    // it take the instance out before its listener closes instead of meeting refused connections.
    if (config.server.drainDelayMs > 0) {
      log.info('not ready: waiting before the drain', { signal, drain_delay_ms: config.server.drainDelayMs })
      await Bun.sleep(config.server.drainDelayMs)
    }
    log.info('draining', { signal, grace_ms: config.server.shutdownGraceMs })
    const drained = server.stop(false)
    const graceOver = Bun.sleep(config.server.shutdownGraceMs).then(() => 'timeout' as const)
    if ((await Promise.race([drained, graceOver])) === 'timeout') {
      log.warn('grace period over: closing remaining connections')
      await server.stop(true)
    }
    // Every request has settled by now: write the last ledger batches while the database is open.
    await app.decorator.ledger.close()
    await app.decorator.shutdownTracing()
    await runtime.close()
    log.info('stopped')
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
}

function printWelcome(base: string, key: string): void {
  const curl = [
    `curl ${base}/v1/chat/completions \\`,
    `  -H "Authorization: Bearer ${key}" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d '{"model":"sim-1","messages":[{"role":"user","content":"Hello"}]}'`,
  ].join('\n')
  console.log(
    [
      '',
      'tollgate is running in development mode. A development API key was created (shown once):',
      '',
      `  ${key}`,
      '',
      `Swagger UI: ${base}/swagger`,
      'Try it:',
      '',
      curl,
      '',
      'Set ADMIN_API_KEY to use the /admin routes.',
      '',
    ].join('\n'),
  )
}

await main()
