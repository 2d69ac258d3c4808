/**
 * `bun run bench` runs every bench in bench/, one after another; `bun run bench overhead
 * streams` runs those by name; `bun run bench --list` names them; `bun run bench --readme`
 * only rebuilds the results section of bench/README.md from bench/results/*.md.
 *
 * Each bench runs in its own process, started through `sh` so it gets the highest open-files
 * limit the machine allows (10,000 streams need 10,000 client sockets), and with
 * BUN_CONFIG_MAX_HTTP_REQUESTS raised: Bun's fetch keeps at most 256 requests in flight by
 * default, which would turn the load generator into a closed loop of 256. After the runs, the
 * results section of bench/README.md is rebuilt, so the README shows the latest numbers.
 */
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { updateReadme } from './lib/readme'

/** Issue 8's order: the gateway's overhead first, then attribution, the peer, streams; then the plugin benches. */
const preferred = ['overhead', 'plugins', 'peer', 'streams', 'cache', 'quota', 'ledger', 'breaker', 'tracing']

/** Every bench/*.ts but this one and the helpers other benches import (`./cache-servers`, say). */
async function available(): Promise<string[]> {
  const files = (await readdir(import.meta.dir)).filter((file) => file.endsWith('.ts') && file !== 'run.ts')
  const imported = new Set<string>()
  for (const file of files) {
    const text = await Bun.file(join(import.meta.dir, file)).text()
    for (const match of text.matchAll(/from '\.\/([\w-]+)(?:\.ts)?'/g)) imported.add(match[1]!)
  }
  const names = files.map((file) => file.slice(0, -'.ts'.length)).filter((name) => !imported.has(name))
  const rank = (name: string) => (preferred.includes(name) ? preferred.indexOf(name) : preferred.length)
  return names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))
}

async function runOne(name: string): Promise<boolean> {
  console.log(`\n=== bench ${name} ===`)
  const started = performance.now()
  const proc = Bun.spawn(
    [
      'sh',
      '-c',
      'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"',
      'sh',
      'bun',
      join(import.meta.dir, `${name}.ts`),
    ],
    {
      env: { ...process.env, BUN_CONFIG_MAX_HTTP_REQUESTS: '65535' },
      stdio: ['inherit', 'inherit', 'inherit'],
    },
  )
  const code = await proc.exited
  const seconds = Math.round((performance.now() - started) / 1000)
  console.log(`=== bench ${name}: ${code === 0 ? 'done' : `failed (exit ${code})`} in ${seconds} s ===`)
  return code === 0
}

const args = process.argv.slice(2)
const names = await available()
if (args.includes('--list')) {
  console.log(names.join('\n'))
  process.exit(0)
}
if (!args.includes('--readme')) {
  const wanted = args.filter((arg) => !arg.startsWith('--'))
  const unknown = wanted.filter((name) => !names.includes(name))
  if (unknown.length) {
    console.error(`unknown bench: ${unknown.join(', ')}; available: ${names.join(', ')}`)
    process.exit(2)
  }
  const failed: string[] = []
  for (const name of wanted.length ? wanted : names) if (!(await runOne(name))) failed.push(name)
  await updateReadme(names)
  if (failed.length) {
    console.error(`\nfailed: ${failed.join(', ')}`)
    process.exit(1)
  }
} else {
  await updateReadme(names)
}
