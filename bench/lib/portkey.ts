/**
 * The peer gateway: Portkey's open-source AI gateway (`@portkey-ai/gateway`, Node.js + Hono),
 * installed from npm into a temporary folder (never a dependency of tollgate) and run with its
 * own Node entry, headless, in production mode, on 127.0.0.1:8787 (a spare port if that one is
 * taken). It reaches the simulator through its `openai` provider with a custom host.
 */
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Target } from './load'
import { type Child, sparePort, spawnChild } from './procs'

/** Pinned, so reruns compare against the same peer; BENCH_PORTKEY_VERSION overrides it. */
export const PORTKEY_VERSION = process.env.BENCH_PORTKEY_VERSION ?? '1.15.2'
const PORTKEY_PORT = 8787

/** Reused across runs (same version), so a rerun does not download it again. */
const installDir = join(tmpdir(), `tollgate-bench-portkey-${PORTKEY_VERSION}`)
const entry = join(installDir, 'node_modules', '@portkey-ai', 'gateway', 'build', 'start-server.js')

async function install(): Promise<void> {
  if (existsSync(entry)) return
  console.log(`installing @portkey-ai/gateway@${PORTKEY_VERSION} into ${installDir}`)
  const proc = Bun.spawn(
    [
      'npm',
      'install',
      '--prefix',
      installDir,
      '--no-audit',
      '--no-fund',
      `@portkey-ai/gateway@${PORTKEY_VERSION}`,
    ],
    { stdout: 'inherit', stderr: 'inherit' },
  )
  if ((await proc.exited) !== 0 || !existsSync(entry))
    throw new Error(`npm install of @portkey-ai/gateway@${PORTKEY_VERSION} failed`)
}

/** The Node.js that runs Portkey (the one on PATH), for the result. */
export function nodeVersion(): string {
  const result = Bun.spawnSync(['node', '--version'])
  return result.success ? result.stdout.toString().trim() : 'unknown'
}

async function portFree(port: number): Promise<boolean> {
  try {
    const listener = Bun.listen({ hostname: '127.0.0.1', port, socket: { data() {} } })
    listener.stop(true)
    return true
  } catch {
    return false
  }
}

export async function startPortkey(): Promise<Child> {
  await install()
  const port = (await portFree(PORTKEY_PORT)) ? PORTKEY_PORT : sparePort()
  return spawnChild({
    cmd: ['node', entry, `--port=${port}`, '--headless'],
    cwd: installDir,
    env: { NODE_ENV: 'production' },
    port,
    ready: async (url) => (await fetch(url)).ok,
  })
}

/** The same chat request as `directTarget`, through Portkey to the simulator. */
export function portkeyTarget(portkey: Child, simUrl: string): Target {
  return {
    name: 'portkey',
    url: `${portkey.url}/v1/chat/completions`,
    headers: {
      'content-type': 'application/json',
      authorization: 'Bearer sk-bench-unused',
      'x-portkey-provider': 'openai',
      'x-portkey-custom-host': `${simUrl}/v1`,
    },
    body: JSON.stringify({
      model: 'sim-1',
      messages: [{ role: 'user', content: 'Say hello in eight words.' }],
      max_tokens: 8,
    }),
  }
}
