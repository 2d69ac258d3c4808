/**
 * The last resort of a graceful shutdown: rows the ledger could not write before its
 * deadline (the database was down for the whole grace period) go to a JSON-lines file, and
 * the next start writes them. Inserts are idempotent on `request_id`, so a file replayed
 * twice, or holding rows that did commit after all, counts nothing twice.
 */
import { mkdir, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { EventRow } from './events'
import type { LedgerSink } from './sink'

const pattern = /^ledger-.*\.jsonl$/

export class Spill {
  /** `dir` null: nowhere to spill; rows left at shutdown are only reported. */
  constructor(readonly dir: string | null) {}

  /** Writes rows to a new file; returns its path, or null without a folder. */
  async save(rows: readonly EventRow[]): Promise<string | null> {
    if (this.dir === null || rows.length === 0) return null
    await mkdir(this.dir, { recursive: true })
    const stamp = new Date().toISOString().replaceAll(':', '-')
    const path = join(this.dir, `ledger-${stamp}-${process.pid}-${crypto.randomUUID().slice(0, 8)}.jsonl`)
    await Bun.write(path, `${rows.map((row) => JSON.stringify(row)).join('\n')}\n`)
    return path
  }

  /**
   * Writes every spilled file through `write` and deletes each once its rows committed.
   * Rejects at the first failure, leaving that file and the later ones for the next try.
   */
  async replay(write: LedgerSink, batchSize: number): Promise<{ files: number; rows: number }> {
    if (this.dir === null) return { files: 0, rows: 0 }
    const names = (await readdir(this.dir).catch(() => [] as string[])).filter((name) => pattern.test(name))
    let rows = 0
    for (const name of names.sort()) {
      const path = join(this.dir, name)
      const lines = (await Bun.file(path).text()).split('\n').filter((line) => line.trim() !== '')
      const batch = lines.map((line) => JSON.parse(line) as EventRow)
      for (let i = 0; i < batch.length; i += batchSize) await write(batch.slice(i, i + batchSize))
      await rm(path, { force: true })
      rows += batch.length
    }
    return { files: names.length, rows }
  }
}
