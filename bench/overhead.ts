/**
 * `bun run bench overhead`: what tollgate costs in front of a model. The simulator (zero
 * latency, an 8-token answer) is measured direct and through tollgate with every plugin on
 * (real Redis and Postgres, an enterprise key whose limits are all set but never bind, the
 * cache bypassed with `Cache-Control: no-store` so every request goes upstream), at 500,
 * 1,000 and 2,000 requests/s (open model) and at maximum (closed loop). Reports the added
 * latency per percentile and the throughput ratio. Target (issue 8): at 1,000 req/s, added
 * p50 under 0.3 ms and added p99 under 1 ms.
 */
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { added, addedTable, compare, latencyTable } from './lib/compare'
import { benchConcurrency, benchSeconds, profileDir } from './lib/env'
import { profileMarkdown, summarizeProfile } from './lib/profile'
import { startRecording } from './lib/report'
import { directTarget, gatewayTarget, startStack } from './lib/setup'

const seconds = benchSeconds()
const concurrency = benchConcurrency()
const rates = [500, 1000, 2000]
// A profiled run is slower; it gets its own result files so it never replaces the real numbers.
const recording = profileDir()
  ? startRecording('overhead-profiled', 'overhead, with the gateway under the CPU profiler')
  : startRecording('overhead', 'overhead: direct vs through tollgate, every plugin on')

const stack = await startStack({ cpuProfileDir: profileDir() })
let steps: Awaited<ReturnType<typeof compare>>
try {
  steps = await compare(
    [
      { target: directTarget(stack.sim), pid: stack.sim.pid },
      { target: gatewayTarget(stack.gateway, stack.key), pid: stack.gateway.pid },
    ],
    { rates, seconds, concurrency },
  )
} finally {
  await stack.close()
}

/** The gateway's profile, summarised by samples (see lib/profile.ts), when one was asked for. */
async function profileSection(dir: string | undefined): Promise<string> {
  if (!dir) return ''
  const files = (await readdir(dir)).filter((file) => file.endsWith('.cpuprofile')).sort()
  const latest = files.at(-1)
  if (!latest) return ''
  const summary = summarizeProfile(await Bun.file(join(dir, latest)).json())
  return `Gateway CPU profile (${summary.samples} samples of 1 ms over the whole run, ${latest}):\n\n${profileMarkdown(summary)}`
}

const rows = added(steps)
const at1000 = rows.find((row) => row.load === '1000 req/s')
const targets = at1000
  ? [
      `- added p50 at 1,000 req/s: ${at1000.p50.toFixed(2)} ms (target < 0.3 ms): ${at1000.p50 < 0.3 ? 'met' : 'missed'}`,
      `- added p99 at 1,000 req/s: ${at1000.p99.toFixed(2)} ms (target < 1 ms): ${at1000.p99 < 1 ? 'met' : 'missed'}`,
    ].join('\n')
  : ''
const max = rows.find((row) => row.load.startsWith('max'))
await recording.write(
  { rates, seconds, concurrency, steps, added: rows },
  [
    `Open model at each rate for ${seconds} s (latency from each request's due time), then a closed loop of ${concurrency} workers. CPU µs/req: CPU time of the simulator (direct) or of the gateway process per answered request.`,
    latencyTable(steps),
    'Added by tollgate (its percentile minus the direct one at the same load):',
    addedTable(rows),
    targets,
    max ? `Throughput at maximum: tollgate ${(max.throughputRatio * 100).toFixed(0)}% of direct.` : '',
    await profileSection(profileDir()),
  ].join('\n\n'),
)
