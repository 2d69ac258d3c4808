/**
 * The soak's verdicts, computed from what the client recorded, what the ledger holds and the
 * RSS samples: each check is a PASS/FAIL line with the figures that decided it.
 */
import type { Sent } from './soak-client'

export interface Check {
  name: string
  pass: boolean
  detail: string
}

/**
 * Codes of answers given before admission, which never settle and so never reach the ledger:
 * auth refusals, quota denials (and `closed` fallback refusals), the ledger's own backlog
 * refusal (checked before quota is reserved), and request validation.
 */
const beforeAdmission = new Set([
  'invalid_api_key',
  'auth_unavailable',
  'too_many_auth_failures',
  'rate_limit_exceeded',
  'insufficient_quota',
  'quota_unavailable',
  'ledger_backlog_full',
  'invalid_value',
  'invalid_request',
])

/** Admitted: the gateway took the request as our id and did not refuse it before admission. */
export function admitted(record: Sent): boolean {
  if (record.status === 0 || !record.echoed) return false
  return record.status === 200 || !beforeAdmission.has(record.code ?? '')
}

export interface KillWindow {
  /** Run-relative ms of the SIGKILL. */
  at: number
  /** How far before the kill a settled row may still sit in the killed instance's ledger buffer. */
  bufferMs: number
}

/** Requests on the killed instance that it could not (or could not yet durably) settle. */
export function onKilled(record: Sent, kill: KillWindow): 'in-flight' | 'buffered' | null {
  if (record.gateway !== 'b' || record.generation !== 1) return null
  if (record.sentAt <= kill.at && record.doneAt >= kill.at) return 'in-flight'
  if (record.doneAt >= kill.at - kill.bufferMs && record.doneAt < kill.at) return 'buffered'
  return null
}

export interface LedgerResult {
  check: Check
  settled: number
  inFlightOnKilled: number
  bufferedOnKilledMissing: number
  missingByCode: Record<string, number>
}

/**
 * Every admitted-and-settled request appears exactly once in `usage_events`: admitted (above)
 * and its answer fully read (a 200 whose body completed, or an error after admission). Excluded,
 * and counted apart: requests in flight on the SIGKILLed instance (no process left to settle
 * them), and those it answered within `bufferMs` before the kill whose rows were still in its
 * in-memory ledger buffer (SIGKILL allows no flush; SIGTERM would).
 */
export function ledgerCheck(records: Sent[], rows: Map<string, number>, kill: KillWindow): LedgerResult {
  let settled = 0
  let inFlight = 0
  let bufferedMissing = 0
  let missing = 0
  let duplicated = 0
  const missingByCode: Record<string, number> = {}
  for (const record of records) {
    const killed = onKilled(record, kill)
    if (killed === 'in-flight') {
      inFlight++
      continue
    }
    if (!admitted(record) || record.outcome !== 'complete') continue
    const count = rows.get(record.id) ?? 0
    if (killed === 'buffered' && count === 0) {
      bufferedMissing++
      continue
    }
    settled++
    if (count === 0) {
      missing++
      const label = `${record.status} ${record.code ?? ''} ${record.kind}`.trim()
      missingByCode[label] = (missingByCode[label] ?? 0) + 1
    }
  }
  // Rows no client request explains, or an id twice, would be double counting (ids are unique per request).
  const known = new Set(records.map((record) => record.id))
  let strays = 0
  for (const [id, count] of rows) {
    if (!known.has(id)) strays++
    if (count > 1) duplicated++
  }
  return {
    settled,
    inFlightOnKilled: inFlight,
    bufferedOnKilledMissing: bufferedMissing,
    missingByCode,
    check: {
      name: 'ledger: every admitted and settled request in usage_events exactly once',
      pass: missing === 0 && duplicated === 0 && strays === 0,
      detail:
        `${settled} settled: ${missing} missing, ${duplicated} duplicated, ${strays} rows for unknown ids; ` +
        `excluded: ${inFlight} in flight on the SIGKILLed instance, ${bufferedMissing} answered by it within ` +
        `${kill.bufferMs} ms before the kill and never flushed`,
    },
  }
}

/** Where a quota decision may be taken: Redis (one epoch per server life) or an instance's local store. */
export interface Decider {
  name: string
  from: number
  to: number
}

/**
 * Quota bound for a user of N requests/minute. GCRA (admit.lua) admits at most N + floor(L/T)
 * in any interval of length L, T = 60 s / N. Each decider keeps its own state: Redis before
 * the kill, Redis after the restart (empty: nothing persisted), and each instance's local
 * fallback store while Redis is out. So in a 60 s window the bound is the sum, over deciders
 * active in it, of N + floor(overlap / T). Checked over every 60 s window, stepped by 1 s.
 */
export function quotaCheck(
  records: Sent[],
  perMinute: number,
  deciders: Decider[],
  end: number,
  kill: KillWindow,
): Check {
  // Unanswered requests count as admitted when they may have been: timed out, or in flight at the kill.
  const counted = (record: Sent) =>
    admitted(record) ||
    (record.status === 0 && (record.outcome === 'timeout' || onKilled(record, kill) === 'in-flight'))
  const times = records
    .filter((record) => record.kind === 'quota' && counted(record))
    .map((record) => record.sentAt)
    .sort((a, b) => a - b)
  const interval = 60_000 / perMinute
  let worst = { at: 0, count: 0, bound: 0 }
  let exceeded = 0
  for (let from = 0; from + 60_000 <= Math.max(end, 60_000); from += 1000) {
    const to = from + 60_000
    const count = times.filter((t) => t >= from && t < to).length
    let bound = 0
    for (const decider of deciders) {
      const overlap = Math.min(to, decider.to) - Math.max(from, decider.from)
      if (overlap > 0) bound += perMinute + Math.floor(overlap / interval)
    }
    if (count > bound) exceeded++
    if (count / bound > worst.count / (worst.bound || 1)) worst = { at: from, count, bound }
  }
  return {
    name: `quota: small tier (${perMinute}/min) never admitted beyond the fallback bound`,
    pass: exceeded === 0,
    detail:
      `${times.length} admitted of ${records.filter((r) => r.kind === 'quota').length}; ${exceeded} windows over; ` +
      `fullest 60 s window at ${(worst.at / 1000).toFixed(0)} s: ${worst.count} admitted, bound ${worst.bound}`,
  }
}

/** Least-squares slope of (ms, KiB) samples, in MiB per minute. */
export function slopeMiBPerMin(samples: Array<[number, number]>): number {
  const n = samples.length
  if (n < 2) return 0
  const mx = samples.reduce((sum, [x]) => sum + x, 0) / n
  const my = samples.reduce((sum, [, y]) => sum + y, 0) / n
  let num = 0
  let den = 0
  for (const [x, y] of samples) {
    num += (x - mx) * (y - my)
    den += (x - mx) ** 2
  }
  return den === 0 ? 0 : ((num / den) * 60_000) / 1024
}
