/**
 * Result files: `bench/results/<name>.json` (everything measured, with the machine) and
 * `bench/results/<name>.md` (the tables bench/README.md shows). Each run overwrites its own
 * pair, so the committed files are always the latest run.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { type MachineInfo, machineInfo } from './machine'

export const resultsDir = join(import.meta.dir, '..', 'results')

export function machineLine(machine: MachineInfo): string {
  return (
    `${machine.cores} cores (${machine.cpu}), ${machine.memoryGiB} GiB, Bun ${machine.bun}, ` +
    `${machine.date.slice(0, 16).replace('T', ' ')} UTC, load average ${machine.loadAverage1m} at start, ` +
    `commit ${machine.commit}${machine.dirty ? ' (with uncommitted changes in src/plugins/db)' : ''}`
  )
}

/** Captured when a bench starts, so the load average is the one its run began under. */
export function startRecording(name: string, title: string) {
  const machine = machineInfo()
  const started = performance.now()
  return {
    machine,
    async write(data: Record<string, unknown>, markdown: string): Promise<void> {
      await mkdir(resultsDir, { recursive: true })
      const seconds = Math.round((performance.now() - started) / 1000)
      const json = { name, title, machine, wallSeconds: seconds, ...data }
      await Bun.write(join(resultsDir, `${name}.json`), `${JSON.stringify(json, null, 2)}\n`)
      const text = `### ${title}\n\n${machineLine(machine)}; the run took ${seconds} s.\n\n${markdown.trim()}\n`
      await Bun.write(join(resultsDir, `${name}.md`), text)
      console.log(`\n${text}\nwrote bench/results/${name}.json and .md`)
    },
  }
}

/** A Markdown table; numbers are printed as they are, so round them first. */
export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const line = (cells: Array<string | number>) => `| ${cells.join(' | ')} |`
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n')
}

/** Milliseconds to 2 decimals (10 µs): finer would be noise on this machine. */
export const ms = (value: number): string => value.toFixed(2)
/** A signed difference in ms. */
export const delta = (value: number): string => `${value >= 0 ? '+' : ''}${value.toFixed(2)}`
