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
