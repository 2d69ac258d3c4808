/**
 * The processes a bench measures: the simulator, tollgate (`src/main.ts`, configured as an
 * operator would: env plus a TOLLGATE_CONFIG file) and a throwaway Postgres database. Each
 * runs as its own OS process, so the load generator (the bench process itself) never shares
 * an event loop with what it measures. Every child is SIGKILLed when the bench exits, so a
 * crashed or interrupted run leaves nothing listening.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import postgres from 'postgres'

export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'
export const POSTGRES_URL = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
export const ADMIN_KEY = 'bench-admin-key-0123456789'
const root = join(import.meta.dir, '..', '..')

export interface Child {
  readonly pid: number
  /** Base URL, without a path. */
  readonly url: string
  readonly port: number
  /** The last 20 kB the process wrote to stdout and stderr, for failure messages. */
  output(): string
  /** Resident set size now, in KiB (VmRSS of /proc/<pid>/status); 0 once the process is gone. */
  rssKiB(): Promise<number>
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
  stop(graceMs?: number): Promise<void>
}

const children = new Set<Subprocess>()
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})
// Ctrl-C on a bench must not leave a gateway or simulator behind: exiting runs the handler above.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130))

/** A port the OS just handed out, released for a child to bind. */
export function sparePort(): number {
  const listener = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const { port } = listener
  listener.stop(true)
  return port
}

export async function rssKiB(pid: number): Promise<number> {
  try {
    const status = await Bun.file(`/proc/${pid}/status`).text()
    const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status)
    return match ? Number(match[1]) : 0
  } catch {
    return 0
  }
}

export interface SpawnOptions {
  cmd: string[]
  env: Record<string, string>
  port: number
  /** Resolves true once the child answers; polled every 25 ms. */
  ready: (url: string) => Promise<boolean>
  cwd?: string
  /** @default 20000 */
  startTimeoutMs?: number
}

export async function spawnChild({
  cmd,
  env,
  port,
  ready,
  cwd = root,
  startTimeoutMs = 20_000,
}: SpawnOptions): Promise<Child> {
  const proc = Bun.spawn(cmd, {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? tmpdir(), ...env },
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
  const child: Child = {
    pid: proc.pid,
    url,
    port,
    output: () => output,
    rssKiB: () => rssKiB(proc.pid),
    async stop(graceMs = 15_000) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs)
      await proc.exited
      clearTimeout(timer)
      children.delete(proc)
    },
  }
  const deadline = performance.now() + startTimeoutMs
  while (!(await ready(url).catch(() => false))) {
    if (proc.exitCode !== null || performance.now() > deadline) {
      await child.stop(0)
      throw new Error(`${cmd.join(' ')} on :${port} did not start (exit ${proc.exitCode}):\n${output}`)
    }
    await Bun.sleep(25)
  }
  return child
}

export interface SimProfile {
  /** @default 0 */
  ttftMs?: number
  /** @default 0 (every token at once) */
  tokensPerSecond?: number
  /** Natural answers are between half of it and all of it; requests cap them with max_tokens. */
  maxTokens?: number
}

/** The simulator (`src/upstream/sim-server.ts`) as its own process. */
export function startSim(profile: SimProfile = {}, env: Record<string, string> = {}): Promise<Child> {
  const port = sparePort()
  return spawnChild({
    cmd: ['bun', join(import.meta.dir, 'sim-main.ts')],
    env: { BENCH_SIM_OPTIONS: JSON.stringify({ ...profile, port }), ...env },
    port,
    ready: async (url) => (await fetch(`${url}/_sim/stats`)).ok,
  })
}

export interface GatewayOptions {
  /** The TOLLGATE_CONFIG file's content (snake_case, as DESIGN.md documents it). */
  file: Record<string, unknown>
  /** Extra environment: DATABASE_URL, REDIS_URL, BUN_CONFIG_MAX_HTTP_REQUESTS... */
  env?: Record<string, string>
  /** Write CPU profiles (`bun --cpu-prof`: .cpuprofile and .md) into this folder when the gateway exits. */
  cpuProfileDir?: string
}

export interface Gateway extends Child {
  /** Creates an API key through the admin API; answers its plaintext. */
  createKey(userId: string, tier: string): Promise<string>
}

/** tollgate as its own process, in production mode, waiting until /health/ready is healthy. */
export async function startGateway({ file, env = {}, cpuProfileDir }: GatewayOptions): Promise<Gateway> {
  const dir = await mkdtemp(join(tmpdir(), 'tollgate-bench-'))
  const configPath = join(dir, 'config.json')
  await Bun.write(configPath, JSON.stringify(file))
  const port = sparePort()
  const profile = cpuProfileDir ? ['--cpu-prof', '--cpu-prof-md', `--cpu-prof-dir=${cpuProfileDir}`] : []
  const child = await spawnChild({
    cmd: ['bun', ...profile, join(root, 'src', 'main.ts')],
    env: {
      NODE_ENV: 'production',
      PORT: String(port),
      HOST: '127.0.0.1',
      ADMIN_API_KEY: ADMIN_KEY,
      TOLLGATE_CONFIG: configPath,
      LOG_LEVEL: 'warn',
      DATA_DIR: join(dir, 'data'),
      ...env,
    },
    port,
    ready: async (url) => {
      const response = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(1000) })
      return response.ok && ((await response.json()) as { status: string }).status === 'healthy'
    },
  })
  return {
    ...child,
    async stop(graceMs) {
      await child.stop(graceMs)
      await rm(dir, { recursive: true, force: true })
    },
    async createKey(userId, tier) {
      const response = await fetch(`${child.url}/admin/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ user_id: userId, name: 'bench', tier }),
      })
      if (response.status !== 201)
        throw new Error(`key creation: ${response.status} ${await response.text()}`)
      return ((await response.json()) as { key: string }).key
    },
  }
}

export interface ThrowawayDatabase {
  url: string
  drop(): Promise<void>
}

/** Whether a process with this pid is alive (signal 0 only checks). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * A fresh database `bench_<time>_<pid>` in the shared Postgres, so a run starts from an empty
 * ledger. Databases of earlier benches whose process is gone (killed before they could drop
 * theirs) are dropped first.
 */
export async function createDatabase(): Promise<ThrowawayDatabase> {
  const name = `bench_${Date.now()}_${process.pid}`
  const admin = postgres(POSTGRES_URL, { max: 1, connect_timeout: 3, onnotice: () => {} })
  const existing = await admin<
    Array<{ datname: string }>
  >`select datname from pg_database where datname like 'bench\_%'`
  for (const { datname } of existing) {
    const pid = Number(/^bench_\d+_(\d+)$/.exec(datname)?.[1])
    // FORCE: a gateway killed mid-run may leave connections open.
    if (pid && !alive(pid)) await admin.unsafe(`drop database if exists "${datname}" with (force)`)
  }
  await admin.unsafe(`create database "${name}"`)
  const url = new URL(POSTGRES_URL)
  url.pathname = `/${name}`
  return {
    url: url.toString(),
    async drop() {
      await admin.unsafe(`drop database if exists "${name}" with (force)`)
      await admin.end({ timeout: 2 })
    },
  }
}

/** CPU time (user + system) the process has used so far, in ms; from /proc/<pid>/stat. */
export async function cpuMs(pid: number): Promise<number> {
  try {
    const stat = await Bun.file(`/proc/${pid}/stat`).text()
    // Fields after the command (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command; clock ticks of 10 ms.
    return (Number(fields[11]) + Number(fields[12])) * 10
  } catch {
    return 0
  }
}
