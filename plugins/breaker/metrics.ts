/**
 * Counters for the observability plugin, which turns them into Prometheus series: entries
 * into each breaker state, rejections while open, retries, timeouts by kind, fallbacks and
 * stale answers served. Kept as plain per-label maps (no metrics library here), readable at
 * any time through `stats()` and pushed as events to an optional listener.
 */
import type { TimeoutKind } from './timeouts'
import type { BreakerState } from './view'

export type BreakerEvent =
  | { type: 'transition'; target: string; from: BreakerState; to: BreakerState }
  | { type: 'rejected'; target: string }
  | { type: 'retry'; target: string; attempt: number; delayMs: number }
  | { type: 'timeout'; target: string; kind: TimeoutKind }
  | { type: 'fallback'; model: string; servedBy: string; steps: number }
  | { type: 'stale'; model: string }

export interface BreakerStats {
  /** Per target: how often it entered each state (as this instance saw it). */
  transitions: Record<string, Record<BreakerState, number>>
  /** Per target: calls refused without reaching the upstream. */
  rejections: Record<string, number>
  /** Per target: attempts that were retries. */
  retries: Record<string, number>
  /** Per target: attempts and streams cut by each kind of timeout. */
  timeouts: Record<string, Record<TimeoutKind, number>>
  /** Per serving model: answers a fallback served. */
  fallbacks: Record<string, number>
  /** Per requested model: stale cache answers served because every upstream was down. */
  staleAnswers: Record<string, number>
}

const bump = (counts: Record<string, number>, key: string) => {
  counts[key] = (counts[key] ?? 0) + 1
}

export class BreakerMetrics {
  private readonly counts: BreakerStats = {
    transitions: {},
    rejections: {},
    retries: {},
    timeouts: {},
    fallbacks: {},
    staleAnswers: {},
  }

  constructor(private readonly listener: (event: BreakerEvent) => void) {}

  emit(event: BreakerEvent): void {
    const counts = this.counts
    switch (event.type) {
      case 'transition':
        counts.transitions[event.target] ??= { closed: 0, open: 0, half_open: 0 }
        counts.transitions[event.target]![event.to]++
        break
      case 'rejected':
        bump(counts.rejections, event.target)
        break
      case 'retry':
        bump(counts.retries, event.target)
        break
      case 'timeout':
        counts.timeouts[event.target] ??= { connect: 0, ttft: 0, idle: 0, total: 0 }
        counts.timeouts[event.target]![event.kind]++
        break
      case 'fallback':
        bump(counts.fallbacks, event.servedBy)
        break
      case 'stale':
        bump(counts.staleAnswers, event.model)
        break
    }
    try {
      this.listener(event)
    } catch {
      // a metrics listener's failure must never fail the call it describes
    }
  }

  /** A copy: callers may keep it while the counters move on. */
  stats(): BreakerStats {
    return structuredClone(this.counts)
  }
}
