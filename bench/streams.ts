/**
 * `bun run bench streams`: many concurrent SSE streams through one gateway. The simulator
 * process answers with a realistic profile (300 ms to the first token, then 50 tokens/s, 50
 * tokens per answer); 1,000 and then 10,000 streams are opened over a 1 s ramp, direct to
 * the simulator and through tollgate (every plugin on), and a third way through tollgate's
 * built-in simulator provider, which needs no upstream socket per stream. Reports the TTFT
 * tollgate adds, tokens/s delivered, whether every stream finished (none starved) and the
 * gateway's RSS per stream. Target (issue 8): 10,000 streams on one instance, RSS under 1 GB,
 * no stream starved.
 *
 * Env: BENCH_STREAMS (scenarios by number, default all), BENCH_STREAM_TARGETS (`direct`,
 * `tollgate`, `built-in`; default all), so one path can be measured again on its own.
 */
import { readdir } from 'node:fs/promises'
import type { Target } from './lib/load'
import { waitForQuiet } from './lib/machine'
import { startSim } from './lib/procs'
import { delta, ms, startRecording, table } from './lib/report'
import { MODEL, type Stack, startStack } from './lib/setup'
import { runStreams, type StreamRun, sampleRss } from './lib/streams'

/** A simulator pace: one upstream process and the same pace as a built-in provider. */
interface Pace {
  ttftMs: number
  tokensPerSecond: number
  /** Tokens per answer (requests ask for exactly this many). */
  tokens: number
}

interface Scenario {
  name: string
  streams: number
  rampMs: number
  pace: 'realistic' | 'held'
}

const paces: Record<Scenario['pace'], Pace> = {
  realistic: { ttftMs: 300, tokensPerSecond: 50, tokens: 50 },
  // Long and slow: 10,000 streams at 50 tokens/s would ask 500,000 tokens/s of two cores.
  held: { ttftMs: 300, tokensPerSecond: 5, tokens: 100 },
}

const only = process.env.BENCH_STREAMS?.split(',')
const scenarios: Scenario[] = [
  { name: '1,000 streams, 50 tokens at 50/s', streams: 1000, rampMs: 1000, pace: 'realistic' as const },
  { name: '10,000 streams, 50 tokens at 50/s', streams: 10_000, rampMs: 1000, pace: 'realistic' as const },
  { name: '10,000 streams held, 100 tokens at 5/s', streams: 10_000, rampMs: 5000, pace: 'held' as const },
].filter((_, i) => !only || only.includes(String(i + 1)))
const recording = startRecording('streams', 'streams: concurrent SSE streams through one gateway')

const messages = [{ role: 'user', content: 'Tell me a story.' }]
const streamBody = (model: string, pace: Pace) =>
  JSON.stringify({ model, messages, max_tokens: pace.tokens, stream: true })
// Natural answers are between half and all of maxTokens: twice the cap makes every answer the cap.
const sims = {
  realistic: await startSim({ ...paces.realistic, maxTokens: paces.realistic.tokens * 2 }),
  held: await startSim({ ...paces.held, maxTokens: paces.held.tokens * 2 }),
}
const builtIn = (pace: Pace) => ({
  type: 'simulator',
  ttft_ms: pace.ttftMs,
  tokens_per_second: pace.tokensPerSecond,
  max_tokens: pace.tokens * 2,
})
const pricing = { input: 0.5, output: 1.5 }
/** A fresh gateway per measured run, so each RSS peak is that run's alone, not what earlier runs left. */
const startGateway = () =>
  startStack({
    sim: sims.realistic,
    // Bun's fetch allows 256 requests in flight by default; every stream holds one upstream.
    env: { BUN_CONFIG_MAX_HTTP_REQUESTS: '65535' },
    extend: (file) => ({
      ...file,
      providers: {
        ...(file.providers as object),
        slow: { type: 'openai', base_url: `${sims.held.url}/v1` },
        local: builtIn(paces.realistic),
        'local-slow': builtIn(paces.held),
      },
      models: {
        ...(file.models as object),
        'bench-slow': { provider: 'slow', upstream_model: 'sim-1', pricing },
        'bench-local': { provider: 'local', pricing },
        'bench-local-slow': { provider: 'local-slow', pricing },
      },
    }),
  })

const headers = { 'content-type': 'application/json' }
type Subject = 'direct' | 'tollgate' | 'tollgate, built-in sim'
const subjectKeys: Record<Subject, string> = {
  direct: 'direct',
  tollgate: 'tollgate',
  'tollgate, built-in sim': 'built-in',
}
const onlySubjects = process.env.BENCH_STREAM_TARGETS?.split(',')
const subjectNames = (Object.keys(subjectKeys) as Subject[]).filter(
  (name) => !onlySubjects || onlySubjects.includes(subjectKeys[name]),
)

function targetOf(name: Subject, scenario: Scenario, stack: Stack | null): Target {
  const pace = paces[scenario.pace]
  const held = scenario.pace === 'held'
  if (name === 'direct' || !stack)
    return {
      name,
      url: `${sims[scenario.pace].url}/v1/chat/completions`,
      headers,
      body: streamBody('sim-1', pace),
    }
  const model =
    name === 'tollgate' ? (held ? 'bench-slow' : MODEL) : held ? 'bench-local-slow' : 'bench-local'
  return {
    name,
    url: `${stack.gateway.url}/v1/chat/completions`,
    headers: { ...headers, authorization: `Bearer ${stack.key}`, 'cache-control': 'no-store' },
    body: streamBody(model, pace),
  }
}

async function fdCount(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`).catch(() => [])).length
}

async function openFilesLimit(pid: number): Promise<string> {
  const limits = await Bun.file(`/proc/${pid}/limits`).text()
  return /^Max open files\s+(\d+)/m.exec(limits)?.[1] ?? 'unknown'
}

interface Measured extends StreamRun {
  scenario: string
  /** Busy share of the machine's cores just before the run (others' work), 0..1. */
  busyBefore: number
  gatewayRssBeforeMiB: number | null
  gatewayRssPeakMiB: number | null
  gatewayRssPerStreamKiB: number | null
  gatewayPeakFds: number | null
}

const runs: Measured[] = []
let fdLimit = 'unknown'
let emfile = false
for (const scenario of scenarios) {
  console.log(scenario.name)
  for (const name of subjectNames) {
    const stack = name === 'direct' ? null : await startGateway()
    const gateway = stack?.gateway ?? null
    try {
      const target = targetOf(name, scenario, stack)
      // The JIT compiles the stream path before it is measured.
      if (stack) await runStreams(target, { streams: 300, rampMs: 300, timeoutMs: 30_000 })
      // Lets the warm-up's sockets close and the gateway settle before its RSS baseline.
      await Bun.sleep(2000)
      const busyBefore = await waitForQuiet()
      const before = gateway ? await gateway.rssKiB() : 0
      const rss = gateway ? sampleRss(() => gateway.rssKiB()) : null
      const fds = gateway ? sampleRss(() => fdCount(gateway.pid)) : null
      const { streams, rampMs } = scenario
      const run = await runStreams(target, { streams, rampMs, timeoutMs: 120_000 })
      const peak = rss ? await rss.stop() : 0
      const peakFds = fds ? await fds.stop() : null
      const measured: Measured = {
        ...run,
        scenario: scenario.name,
        busyBefore,
        gatewayRssBeforeMiB: gateway ? Math.round(before / 1024) : null,
        gatewayRssPeakMiB: gateway ? Math.round(peak / 1024) : null,
        gatewayRssPerStreamKiB: gateway ? Math.round((peak - before) / Math.max(1, run.peakActive)) : null,
        gatewayPeakFds: peakFds,
      }
      runs.push(measured)
      console.log(
        `  ${name}: finished ${run.completed}/${streams}, peak active ${run.peakActive}, ` +
          `TTFT p50 ${ms(run.ttft.p50)} p99 ${ms(run.ttft.p99)} ms, ${run.aggregateTokensPerSecond} tokens/s, ` +
          `RSS peak ${measured.gatewayRssPeakMiB ?? '-'} MiB, fds ${peakFds ?? '-'}, failures ${JSON.stringify(run.failures)}`,
      )
      if (gateway) {
        fdLimit = await openFilesLimit(gateway.pid)
        if (/EMFILE|too many open files/i.test(gateway.output())) emfile = true
      }
    } finally {
      await stack?.close()
    }
  }
}
// The stacks do not stop the simulators they were given.
await Promise.all([sims.realistic.stop(), sims.held.stop()])

const direct = (scenario: string) => runs.find((run) => run.scenario === scenario && run.target === 'direct')
const rows = runs.map((run) => {
  const base = direct(run.scenario)
  const added = base && run !== base
  return [
    run.scenario,
    `${run.target} (machine ${Math.round(run.busyBefore * 100)}% busy before)`,
    `${run.completed}/${run.streams}`,
    run.failed
      ? Object.entries(run.failures)
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ')
      : '-',
    run.peakActive,
    `${ms(run.ttft.p50)} / ${ms(run.ttft.p99)}`,
    added ? `${delta(run.ttft.p50 - base.ttft.p50)} / ${delta(run.ttft.p99 - base.ttft.p99)}` : '-',
    `${run.perStreamTokensPerSecond.p50} / ${run.perStreamTokensPerSecond.p1}`,
    run.aggregateTokensPerSecond,
    ms(run.maxGapP99),
    run.gatewayRssPeakMiB ?? '-',
    run.gatewayRssPerStreamKiB ?? '-',
    run.gatewayPeakFds ?? '-',
  ]
})
const verdicts = runs
  // Only the held run keeps every stream open long enough to be concurrent on this machine.
  .filter((run) => run.target !== 'direct' && scenarios.find((s) => s.name === run.scenario)?.pace === 'held')
  .map((run) => {
    const finished = run.completed === run.streams
    const held = run.peakActive >= run.streams * 0.95
    const met = finished && held && (run.gatewayRssPeakMiB ?? 0) < 1024
    return (
      `- ${run.scenario}, ${run.target}: ${finished ? 'every stream finished' : `${run.failed} did not finish`}, ` +
      `${run.peakActive} flowing at once, RSS peak ${run.gatewayRssPeakMiB} MiB (target: 10,000 at once, < 1024 MiB, none starved): ${met ? 'met' : 'missed'}`
    )
  })
await recording.write(
  { paces, scenarios, gatewayOpenFilesLimit: fdLimit, gatewayLogShowsEmfile: emfile, runs },
  [
    `Each simulator answers after ${paces.realistic.ttftMs} ms; streams are due evenly over the ramp (1 s; 5 s when held) and TTFT counts from each stream's due time. "flowing at once": streams between their first token and their end at one moment. The gateway's open-files limit is ${fdLimit} (the hard limit here; raising it needs CAP_SYS_RESOURCE, which this machine does not grant): a stream through an upstream holds two sockets in the gateway, one through the built-in simulator one.`,
    table(
      [
        'run',
        'target',
        'finished',
        'failures',
        'flowing at once',
        'TTFT p50 / p99 ms',
        '+TTFT p50 / p99 ms',
        'tokens/s per stream p50 / p1',
        'tokens/s total',
        'longest pause p99 ms',
        'gateway RSS peak MiB',
        'RSS KiB / stream',
        'gateway fds peak',
      ],
      rows,
    ),
    verdicts.join('\n'),
    emfile
      ? 'The gateway logged EMFILE (too many open files): the per-process open-files limit stopped it.'
      : '',
  ].join('\n\n'),
)
