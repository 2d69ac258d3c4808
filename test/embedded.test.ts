/**
 * First run with no environment at all: the server process starts on :8080 with the
 * in-memory store, PGlite in ./.data and the simulator, prints a development key once,
 * and that key completes a request. SIGTERM drains and exits cleanly.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Subprocess } from 'bun'

const mainPath = resolve(import.meta.dir, '../src/main.ts')
const workDir = mkdtempSync(join(tmpdir(), 'tollgate-embedded-'))
const base = 'http://127.0.0.1:8080'
let child: Subprocess<'ignore', 'pipe', 'pipe'> | undefined

function start() {
  // Only what a shell needs to find bun: no tollgate variable at all.
  return Bun.spawn([process.execPath, 'run', mainPath], {
    cwd: workDir,
    env: { PATH: process.env.PATH ?? '', HOME: workDir },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
}

async function readUntil(stream: ReadableStream<Uint8Array>, pattern: RegExp, timeoutMs: number) {
  const reader = stream.getReader()
  const decoder = new TextDecoder()
  let text = ''
  const deadline = Date.now() + timeoutMs
  while (!pattern.test(text)) {
    const next = await Promise.race([
      reader.read(),
      Bun.sleep(Math.max(0, deadline - Date.now())).then(() => null),
    ])
    if (!next || next.done) break
    text += decoder.decode(next.value, { stream: true })
  }
  reader.releaseLock()
  return text
}

async function waitReady(timeoutMs: number): Promise<Response> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const response = await fetch(`${base}/health/ready`)
      if (response.status === 200) return response
    } catch {}
    if (Date.now() > deadline) throw new Error('gateway did not become ready')
    await Bun.sleep(100)
  }
}

afterAll(() => {
  child?.kill('SIGKILL')
  rmSync(workDir, { recursive: true, force: true })
})

describe('embedded first run', () => {
  test('serves on :8080 with a printed development key, then drains on SIGTERM', async () => {
    const probe = await fetch(`${base}/health/live`).catch(() => null)
    expect(probe, 'port 8080 must be free for this test').toBeNull()
    child = start()
    const output = await readUntil(child.stdout, /tg-[A-Za-z0-9_-]{40,}[\s\S]*curl/, 30_000)
    const key = output.match(/tg-[A-Za-z0-9_-]{40,}/)?.[0]
    expect(key, output).toBeDefined()
    expect(output).toContain('/swagger')
    const ready = (await (await waitReady(30_000)).json()) as {
      components: Record<string, { status: string }>
    }
    expect(Object.keys(ready.components)).toEqual(expect.arrayContaining(['store', 'pglite']))

    const completion = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'sim-1', messages: [{ role: 'user', content: 'Hello' }] }),
    })
    expect(completion.status).toBe(200)
    expect(((await completion.json()) as { object: string }).object).toBe('chat.completion')

    child.kill('SIGTERM')
    expect(await child.exited).toBe(0)

    // A second start keeps the data folder and prints no new key.
    child = start()
    const again = await readUntil(child.stdout, /tollgate listening/, 30_000)
    await waitReady(30_000)
    expect(again).not.toMatch(/tg-[A-Za-z0-9_-]{40,}/)
    const reused = await fetch(`${base}/v1/models`, { headers: { authorization: `Bearer ${key}` } })
    expect(reused.status).toBe(200)
    child.kill('SIGTERM')
    expect(await child.exited).toBe(0)
  }, 150_000)
})
