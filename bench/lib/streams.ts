/**
 * The streaming load: N chat completions with `stream: true`, opened evenly over a ramp, each
 * read to its end on its own HTTP/1.1 connection (Bun's fetch keeps one socket per in-flight
 * request; BUN_CONFIG_MAX_HTTP_REQUESTS must allow N of them). Per stream: time to the first
 * token (from the moment the stream was due, as in the open model), tokens received, whether
 * `[DONE]` arrived, the longest pause between two reads, and the token rate once tokens flow.
 * Tokens are counted by their `"content":"` marker rather than by parsing each frame, so the
 * client spends as little CPU as possible on the two cores it shares with what it measures.
 */
import { failureName, type Latency, post, summarize, type Target } from './load'

export interface StreamRun {
  target: string
  streams: number
  rampMs: number
  completed: number
  failed: number
  failures: Record<string, number>
  /** Most streams sent and not yet finished at one moment (including those waiting to connect). */
  peakOpen: number
  /** Most streams flowing at one moment: first token received, end not yet. */
  peakActive: number
  /** ms from due time to the first content token; completed streams. */
  ttft: Latency
  /** Tokens per second of each stream from its first token to its last; completed streams. */
  perStreamTokensPerSecond: { p1: number; p10: number; p50: number }
  /** Every token received over the run's wall time. */
  aggregateTokensPerSecond: number
  tokensPerStream: { min: number; max: number }
  /** Longest pause between two reads of a stream, p99 over streams, in ms. */
  maxGapP99: number
  wallSeconds: number
}

const MARKER = '"content":"'

interface One {
  ok: boolean
  failure?: string
  ttft: number
  tokens: number
  rate: number
  maxGap: number
}

/** Streams flowing right now, shared by the readers of one run. */
interface Gauge {
  active: number
  peak: number
}

async function readStream(
  target: Target,
  i: number,
  due: number,
  timeoutMs: number,
  gauge: Gauge,
): Promise<One> {
  const one: One = { ok: false, ttft: 0, tokens: 0, rate: 0, maxGap: 0 }
  try {
    const response = await post(target, i, timeoutMs)
    if (response.status !== 200 || !response.body) {
      await response.arrayBuffer()
      return { ...one, failure: `HTTP ${response.status}` }
    }
    const decoder = new TextDecoder()
    let tail = ''
    let first = 0
    let last = performance.now()
    let done = false
    let flowing = false
    try {
      for await (const chunk of response.body) {
        const now = performance.now()
        if (now - last > one.maxGap && one.tokens > 0) one.maxGap = now - last
        last = now
        const text = tail + decoder.decode(chunk, { stream: true })
        let at = text.indexOf(MARKER)
        while (at >= 0) {
          if (one.tokens === 0) {
            first = now
            flowing = true
            gauge.active++
            gauge.peak = Math.max(gauge.peak, gauge.active)
          }
          one.tokens++
          at = text.indexOf(MARKER, at + MARKER.length)
        }
        if (text.includes('data: [DONE]')) done = true
        // Keep enough of the end to find a marker split across two reads.
        tail = text.slice(-(MARKER.length + 12))
        if (tail.includes(MARKER)) tail = tail.slice(tail.lastIndexOf(MARKER) + MARKER.length)
      }
    } finally {
      if (flowing) gauge.active--
    }
    one.ttft = first - due
    one.rate = one.tokens > 1 && last > first ? ((one.tokens - 1) * 1000) / (last - first) : 0
    return done ? { ...one, ok: true } : { ...one, failure: 'no [DONE]' }
  } catch (error) {
    return { ...one, failure: failureName(error) }
  }
}

export interface StreamOptions {
  streams: number
  /** Streams are due evenly over this long. */
  rampMs: number
  /** A stream not finished by then counts as failed (starved). */
  timeoutMs: number
}

export async function runStreams(
  target: Target,
  { streams, rampMs, timeoutMs }: StreamOptions,
): Promise<StreamRun> {
  const results: Promise<One>[] = []
  let open = 0
  let peakOpen = 0
  const gauge: Gauge = { active: 0, peak: 0 }
  const start = performance.now() + 5
  let next = 0
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now()
      while (next < streams && start + (next * rampMs) / streams <= now) {
        const due = start + (next * rampMs) / streams
        open++
        peakOpen = Math.max(peakOpen, open)
        results.push(
          readStream(target, next, due, timeoutMs, gauge).finally(() => {
            open--
          }),
        )
        next++
      }
      if (next >= streams) return resolve()
      setTimeout(tick, 1)
    }
    setTimeout(tick, 5)
  })
  const all = await Promise.all(results)
  const wallSeconds = (performance.now() - start) / 1000
  const good = all.filter((one) => one.ok)
  const failures: Record<string, number> = {}
  for (const one of all) if (one.failure) failures[one.failure] = (failures[one.failure] ?? 0) + 1
  const rates = Float64Array.from(good.map((one) => one.rate)).sort()
  const rateAt = (q: number) => Math.round((rates[Math.floor(q * (rates.length - 1))] ?? 0) * 10) / 10
  const tokens = all.reduce((sum, one) => sum + one.tokens, 0)
  const counts = good.map((one) => one.tokens)
  return {
    target: target.name,
    streams,
    rampMs,
    completed: good.length,
    failed: all.length - good.length,
    failures,
    peakOpen,
    peakActive: gauge.peak,
    ttft: summarize(good.map((one) => one.ttft)),
    perStreamTokensPerSecond: { p1: rateAt(0.01), p10: rateAt(0.1), p50: rateAt(0.5) },
    aggregateTokensPerSecond: Math.round(tokens / wallSeconds),
    tokensPerStream: {
      min: counts.length ? Math.min(...counts) : 0,
      max: counts.length ? Math.max(...counts) : 0,
    },
    maxGapP99: summarize(good.map((one) => one.maxGap)).p99,
    wallSeconds: Math.round(wallSeconds * 100) / 100,
  }
}

/** Samples a process's RSS every `everyMs` until stopped; answers the peak in KiB. */
export function sampleRss(read: () => Promise<number>, everyMs = 100) {
  let peak = 0
  let running = true
  const loop = (async () => {
    while (running) {
      peak = Math.max(peak, await read())
      await Bun.sleep(everyMs)
    }
  })()
  return {
    async stop(): Promise<number> {
      running = false
      await loop
      return peak
    },
  }
}
