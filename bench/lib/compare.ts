/**
 * Side-by-side runs: the same loads against several subjects (the simulator direct, tollgate,
 * another gateway, tollgate with a plugin off), interleaved load by load so every subject at
 * a given load is measured within seconds of the others, under the same machine conditions.
 * Each subject names the process whose CPU time counts for it, so a result also gives CPU
 * per request: steadier than latency on a shared 2-core machine.
 */
import { closedLoop, openLoop, type RunResult, type Target } from './load'
import { waitForQuiet } from './machine'
import { cpuMs } from './procs'
import { delta, ms, table } from './report'

export interface Subject {
  target: Target
  /** The process doing this subject's work: the gateway, or the simulator for `direct`. */
  pid: number
}

export interface Measured extends RunResult {
  /** CPU time of the subject's process per successful request, in µs. */
  cpuUsPerRequest: number
}

export interface LoadStep {
  /** `500 req/s`, or `max (64 workers)` for the closed loop. */
  load: string
  /** Busy share of the machine's cores just before the step (others' work), 0..1. */
  busyBefore: number
  runs: Measured[]
}

export interface CompareOptions {
  rates: number[]
  seconds: number
  /** Workers of the closed-loop maximum-throughput run; 0 skips it. */
  concurrency: number
  /** Closed-loop warm-up per subject before measuring, so the JIT has compiled the hot path. */
  warmupS?: number
}

async function measure(subject: Subject, run: () => Promise<RunResult>): Promise<Measured> {
  const before = await cpuMs(subject.pid)
  const result = await run()
  const used = (await cpuMs(subject.pid)) - before
  const cpuUsPerRequest = result.ok ? Math.round((used * 1000) / result.ok) : 0
  const measured = { ...result, cpuUsPerRequest }
  const { p50, p99, p999 } = measured.latency
  console.log(
    `  ${subject.target.name.padEnd(24)} ${String(measured.achievedRate).padStart(6)} req/s  ` +
      `p50 ${ms(p50)}  p99 ${ms(p99)}  p99.9 ${ms(p999)} ms  errors ${measured.errors}  cpu ${cpuUsPerRequest} µs/req`,
  )
  return measured
}

export async function compare(
  subjects: Subject[],
  { rates, seconds, concurrency, warmupS = 3 }: CompareOptions,
): Promise<LoadStep[]> {
  for (const subject of subjects) {
    console.log(`warm-up ${subject.target.name}`)
    await closedLoop(subject.target, { concurrency: 16, durationS: warmupS })
  }
  const steps: LoadStep[] = []
  for (const rate of rates) {
    const busyBefore = await waitForQuiet()
    console.log(`${rate} req/s for ${seconds} s`)
    const runs: Measured[] = []
    for (const subject of subjects)
      runs.push(await measure(subject, () => openLoop(subject.target, { rate, durationS: seconds })))
    steps.push({ load: `${rate} req/s`, busyBefore, runs })
  }
  if (concurrency > 0) {
    const busyBefore = await waitForQuiet()
    console.log(`max: ${concurrency} workers for ${seconds} s`)
    const runs: Measured[] = []
    for (const subject of subjects)
      runs.push(await measure(subject, () => closedLoop(subject.target, { concurrency, durationS: seconds })))
    steps.push({ load: `max (${concurrency} workers)`, busyBefore, runs })
  }
  return steps
}

export interface Added {
  load: string
  target: string
  p50: number
  p90: number
  p99: number
  p999: number
  /** Achieved rate over the baseline's: the throughput ratio at `max`. */
  throughputRatio: number
}

const round3 = (value: number) => Math.round(value * 1000) / 1000

/** Each subject's latency minus the baseline's at the same load, percentile by percentile. */
export function added(steps: LoadStep[], baseline = 'direct'): Added[] {
  const rows: Added[] = []
  for (const step of steps) {
    const base = step.runs.find((run) => run.target === baseline)
    if (!base) continue
    for (const run of step.runs) {
      if (run === base) continue
      rows.push({
        load: step.load,
        target: run.target,
        p50: round3(run.latency.p50 - base.latency.p50),
        p90: round3(run.latency.p90 - base.latency.p90),
        p99: round3(run.latency.p99 - base.latency.p99),
        p999: round3(run.latency.p999 - base.latency.p999),
        throughputRatio: Math.round((run.achievedRate / Math.max(1, base.achievedRate)) * 1000) / 1000,
      })
    }
  }
  return rows
}

export function latencyTable(steps: LoadStep[]): string {
  const rows = steps.flatMap((step) =>
    step.runs.map((run, i) => [
      i === 0 ? `${step.load} (machine ${Math.round(step.busyBefore * 100)}% busy before)` : step.load,
      run.target,
      run.achievedRate,
      run.errors
        ? `${run.errors} (${Object.entries(run.failures)
            .map(([k, v]) => `${k}: ${v}`)
            .join(', ')})`
        : 0,
      ms(run.latency.p50),
      ms(run.latency.p90),
      ms(run.latency.p99),
      ms(run.latency.p999),
      ms(run.latency.max),
      run.cpuUsPerRequest,
    ]),
  )
  return table(
    [
      'load',
      'target',
      'achieved req/s',
      'errors',
      'p50 ms',
      'p90 ms',
      'p99 ms',
      'p99.9 ms',
      'max ms',
      'CPU µs/req',
    ],
    rows,
  )
}

export function addedTable(rows: Added[], baseline = 'direct'): string {
  return table(
    ['load', `target (vs ${baseline})`, '+p50 ms', '+p90 ms', '+p99 ms', '+p99.9 ms', 'throughput ratio'],
    rows.map((row) => [
      row.load,
      row.target,
      delta(row.p50),
      delta(row.p90),
      delta(row.p99),
      delta(row.p999),
      row.throughputRatio.toFixed(3),
    ]),
  )
}
