/**
 * What a result was measured on: core count, CPU model, memory, Bun version, date, load
 * average at the start and the commit. Numbers from a 2-core machine shared with other work
 * mean little without this next to them, so every result file carries it.
 */
import { cpus, loadavg, totalmem } from 'node:os'

export interface MachineInfo {
  cores: number
  cpu: string
  memoryGiB: number
  bun: string
  platform: string
  date: string
  /** 1-minute load average when the run started: above ~0.5 something else was busy. */
  loadAverage1m: number
  commit: string
  /** Uncommitted changes in the work tree when the run started (the measured code may differ from the commit). */
  dirty: boolean
}

function git(args: string[]): string {
  const result = Bun.spawnSync(['git', ...args], { cwd: `${import.meta.dir}/../..` })
  return result.success ? result.stdout.toString().trim() : ''
}

export function machineInfo(): MachineInfo {
  const list = cpus()
  return {
    cores: list.length,
    cpu: list[0]?.model ?? 'unknown',
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    bun: Bun.version,
    platform: `${process.platform}-${process.arch}`,
    date: new Date().toISOString(),
    loadAverage1m: Math.round((loadavg()[0] ?? 0) * 100) / 100,
    commit: git(['rev-parse', '--short', 'HEAD']) || 'unknown',
    dirty: git(['status', '--porcelain', '--', 'src', 'plugins', 'db']) !== '',
  }
}

/** Busy share of all cores over `ms`, from /proc/stat (0..1). */
export async function cpuBusy(ms = 1000): Promise<number> {
  const read = async () => {
    const line = (await Bun.file('/proc/stat').text()).split('\n', 1)[0] ?? ''
    const ticks = line.trim().split(/\s+/).slice(1).map(Number)
    // idle and iowait are fields 4 and 5 of the cpu line.
    const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0)
    return { idle, total: ticks.reduce((sum, n) => sum + n, 0) }
  }
  const before = await read()
  await Bun.sleep(ms)
  const after = await read()
  const total = after.total - before.total
  return total > 0 ? 1 - (after.idle - before.idle) / total : 0
}

/**
 * Waits (up to `timeoutMs`) until the machine has been mostly idle for two seconds in a row,
 * so a measurement does not start in the middle of someone else's build or test run. Answers
 * the busy share last seen, which the results record. BENCH_QUIET_WAIT_MS=0 skips the wait.
 */
export async function waitForQuiet(
  timeoutMs = Number(process.env.BENCH_QUIET_WAIT_MS ?? 60_000),
): Promise<number> {
  const deadline = performance.now() + timeoutMs
  let quietSeconds = 0
  let busy = 0
  while (performance.now() < deadline) {
    busy = await cpuBusy()
    quietSeconds = busy < 0.2 ? quietSeconds + 1 : 0
    if (quietSeconds >= 2) return busy
  }
  if (timeoutMs > 0) console.log(`  (machine still ${Math.round(busy * 100)}% busy; measuring anyway)`)
  return busy
}
