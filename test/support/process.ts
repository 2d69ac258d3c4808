/**
 * A gateway as a separate OS process (`bun run src/main.ts`), for what an in-process app
 * cannot show: several instances sharing one Redis and one Postgres, and an instance that
 * dies with SIGKILL while it holds leases. Configured the way operators configure it: env
 * plus a TOLLGATE_CONFIG file. Every process started here is SIGKILLed when the test
 * process exits, so none outlives a run.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import { adminKey } from './gateway'
import { type CreatedKey, createKeyAt } from './quota'

export interface GatewayProcessOptions {
  /** Extra environment (REDIS_URL or REDIS_CLUSTER_NODES, DATABASE_URL, ...). */
  env?: Record<string, string>
  /** The config file's content, written as JSON to a temp file for TOLLGATE_CONFIG. */
  file?: Record<string, unknown>
  /**
   * Readiness to wait for: 'healthy' also waits until Redis and the database answer, so
   * the first request is decided on Redis and not by the fallback.
   * @default 'healthy'
   */
  ready?: 'healthy' | 'degraded'
  /** @default 15000 */
  startTimeoutMs?: number
}

export interface GatewayProcess {
  url: string
  pid: number
  /** What the process wrote to stdout and stderr so far, for failure messages. */
  output(): string
  /** Creates an API key through this instance's admin API. */
  createKey(user: string, tier: string): Promise<CreatedKey>
  /** SIGKILL, as a crash or an OOM kill would: no drain, no settlement. */
  kill(): Promise<void>
  /** SIGTERM and wait for the graceful exit. */
  stop(): Promise<void>
  /** The exit code, once the process has exited (for tests that signal it themselves). */
  exited: Promise<number>
}

const children = new Set<Subprocess>()
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

const mainPath = join(import.meta.dir, '..', '..', 'src', 'main.ts')

export async function startGatewayProcess({
  env = {},
  file = {},
  ready = 'healthy',
  startTimeoutMs = 15_000,
}: GatewayProcessOptions = {}): Promise<GatewayProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'tollgate-proc-'))
  const configPath = join(dir, 'config.json')
  await Bun.write(configPath, JSON.stringify(file))
  const port = sparePort()
  const proc = Bun.spawn(['bun', 'run', mainPath], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? dir,
      PORT: String(port),
      HOST: '127.0.0.1',
      ADMIN_API_KEY: adminKey,
      TOLLGATE_CONFIG: configPath,
      LOG_LEVEL: 'warn',
      // Without DATABASE_URL the process would open PGlite in ./.data of the repo.
      DATA_DIR: join(dir, 'data'),
      ...env,
    },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  children.add(proc)
  let output = ''
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder()
    for await (const chunk of stream) output = (output + decoder.decode(chunk)).slice(-20_000)
  }
  void collect(proc.stdout)
  void collect(proc.stderr)

  const url = `http://127.0.0.1:${port}`
  const exited = async () => {
    children.delete(proc)
    await proc.exited
    await rm(dir, { recursive: true, force: true })
  }
  const handle: GatewayProcess = {
    url,
    pid: proc.pid,
    output: () => output,
    createKey: (user, tier) => createKeyAt(url, user, tier),
    async kill() {
      proc.kill('SIGKILL')
      await exited()
    },
    async stop() {
      proc.kill('SIGTERM')
      await exited()
    },
    exited: proc.exited,
  }

  const deadline = performance.now() + startTimeoutMs
  while (!(await isReady(url, ready))) {
    if (proc.exitCode !== null || performance.now() > deadline) {
      await handle.kill()
      throw new Error(
        `gateway process on :${port} did not become ${ready} (exit ${proc.exitCode}):\n${output}`,
      )
    }
    await Bun.sleep(25)
  }
  return handle
}

async function isReady(url: string, wanted: 'healthy' | 'degraded'): Promise<boolean> {
  try {
    const response = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(1000) })
    if (response.status !== 200) return false
    const { status } = (await response.json()) as { status: string }
    return wanted === 'degraded' || status === 'healthy'
  } catch {
    return false
  }
}

/** A port the OS just handed out, released for the child to bind. */
function sparePort(): number {
  const listener = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const { port } = listener
  listener.stop(true)
  return port
}
