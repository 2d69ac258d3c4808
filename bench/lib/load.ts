/**
 * The load generator: a Bun client (fetch, HTTP/1.1 keep-alive) in the bench process, apart
 * from the processes it measures.
 *
 * Why a Bun client and not an established tool: Debian's `wrk` has no fixed-rate mode (its
 * fork wrk2 has one, but is not packaged), `hey` has a per-worker rate limit that still waits
 * for each answer (a closed loop, so it hides stalls), and `autocannon` (npm, `overallRate`)
 * would be a Node process on the same two cores doing the same work as this one, with less
 * control over what is counted. A ~150-line open-model generator whose accounting is in plain
 * view is easier to trust.
 *
 * Open model (`openLoop`): request i is due at start + i/rate whether or not earlier ones were
 * answered, and its latency counts from that due time, not from when it was actually sent
 * (coordinated omission: a stall delays every send behind it, and those waits are latency a
 * user would see). Timers fire with ~1 ms granularity, so a request may leave up to ~1 ms
 * after it was due; that lag is part of every latency, direct and through a gateway alike,
 * and cancels out of the added latency. Closed model (`closedLoop`): N workers each send the
 * next request when the last is answered; its completions per second is the maximum
 * throughput.
 */

export interface Target {
  name: string
  url: string
  headers: Record<string, string>
  /** The JSON body, already serialised (or a function for a body per request). */
  body: string | ((i: number) => string)
}

export interface Latency {
  p50: number
  p90: number
  p99: number
  p999: number
  max: number
  mean: number
}

export interface RunResult {
  target: string
  mode: 'open' | 'closed'
  /** Requests per second asked for (open) or workers (closed). */
  rate: number | null
  concurrency: number | null
  durationS: number
  sent: number
  ok: number
  errors: number
  /** Status codes or error names of failed requests, with counts. */
  failures: Record<string, number>
  /** Successful answers per second over the run. */
  achievedRate: number
  /** Milliseconds; open: from the due time; closed: from the send. Successful requests only. */
  latency: Latency
  /** Milliseconds from the due time to the actual send (open only): how late the client was. */
  sendLagP99: number | null
}

export function summarize(values: Float64Array | number[]): Latency {
  const sorted = Float64Array.from(values).sort()
  const at = (q: number) =>
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0
  let sum = 0
  for (const value of sorted) sum += value
  const round = (value: number) => Math.round(value * 1000) / 1000
  return {
    p50: round(at(0.5)),
    p90: round(at(0.9)),
    p99: round(at(0.99)),
    p999: round(at(0.999)),
    max: round(sorted[sorted.length - 1] ?? 0),
    mean: round(sorted.length ? sum / sorted.length : 0),
  }
}

/** The error's name and the start of its message: `TypeError` alone does not say what broke. */
export function failureName(error: unknown): string {
  const { name = 'Error', message = '' } = error instanceof Error ? error : {}
  return message ? `${name}: ${message.slice(0, 60)}` : name
}

interface Outcome {
  ok: boolean
  failure?: string
}

const REQUEST_TIMEOUT_MS = 15_000

/** Request `i` of the target, given up after `timeoutMs`. */
export function post(target: Target, i: number, timeoutMs: number): Promise<Response> {
  return fetch(target.url, {
    method: 'POST',
    headers: target.headers,
    body: typeof target.body === 'string' ? target.body : target.body(i),
    signal: AbortSignal.timeout(timeoutMs),
  })
}

async function send(target: Target, i: number): Promise<Outcome> {
  try {
    const response = await post(target, i, REQUEST_TIMEOUT_MS)
    // The whole body is read: a gateway is done when the last byte arrived, not the headers.
    await response.arrayBuffer()
    return response.status === 200 ? { ok: true } : { ok: false, failure: `HTTP ${response.status}` }
  } catch (error) {
    return { ok: false, failure: failureName(error) }
  }
}

function tally(failures: Record<string, number>, outcome: Outcome): void {
  if (outcome.failure) failures[outcome.failure] = (failures[outcome.failure] ?? 0) + 1
}

export interface OpenOptions {
  rate: number
  durationS: number
  /** Requests still unanswered beyond this are not sent and count as failures ('overload'). */
  maxInFlight?: number
}

/** Fixed-rate open-model load; latency from each request's due time. */
export async function openLoop(
  target: Target,
  { rate, durationS, maxInFlight = 4096 }: OpenOptions,
): Promise<RunResult> {
  const total = Math.round(rate * durationS)
  const interval = 1000 / rate
  const latencies = new Float64Array(total)
  const lags = new Float64Array(total)
  const failures: Record<string, number> = {}
  let ok = 0
  let sent = 0
  let inFlight = 0
  let next = 0
  const pending: Promise<void>[] = []
  const start = performance.now() + 5
  const fire = (i: number, due: number) => {
    lags[i] = performance.now() - due
    if (inFlight >= maxInFlight) {
      tally(failures, { ok: false, failure: 'overload' })
      return
    }
    inFlight++
    sent++
    pending.push(
      send(target, i).then((outcome) => {
        inFlight--
        if (outcome.ok) latencies[ok++] = performance.now() - due
        else tally(failures, outcome)
      }),
    )
  }
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now()
      while (next < total && start + next * interval <= now) {
        fire(next, start + next * interval)
        next++
      }
      if (next >= total) return resolve()
      setTimeout(tick, Math.max(0, start + next * interval - performance.now()))
    }
    setTimeout(tick, 5)
  })
  await Promise.all(pending)
  const elapsedS = (performance.now() - start) / 1000
  return {
    target: target.name,
    mode: 'open',
    rate,
    concurrency: null,
    durationS,
    sent,
    ok,
    errors: total - ok,
    failures,
    achievedRate: Math.round(ok / elapsedS),
    latency: summarize(latencies.subarray(0, ok)),
    sendLagP99: summarize(lags).p99,
  }
}

export interface ClosedOptions {
  concurrency: number
  durationS: number
}

/** N workers back to back: the maximum throughput, with the latency it comes at. */
export async function closedLoop(
  target: Target,
  { concurrency, durationS }: ClosedOptions,
): Promise<RunResult> {
  const latencies: number[] = []
  const failures: Record<string, number> = {}
  let sent = 0
  const start = performance.now()
  const end = start + durationS * 1000
  const worker = async () => {
    while (performance.now() < end) {
      const began = performance.now()
      const outcome = await send(target, sent++)
      if (outcome.ok) latencies.push(performance.now() - began)
      else tally(failures, outcome)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const elapsedS = (performance.now() - start) / 1000
  return {
    target: target.name,
    mode: 'closed',
    rate: null,
    concurrency,
    durationS,
    sent,
    ok: latencies.length,
    errors: sent - latencies.length,
    failures,
    achievedRate: Math.round(latencies.length / elapsedS),
    latency: summarize(latencies),
    sendLagP99: null,
  }
}
