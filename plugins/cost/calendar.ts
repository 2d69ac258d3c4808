/**
 * UTC calendar arithmetic for reports and budgets: days as `YYYY-MM-DD`, months as
 * `YYYY-MM`, and the month-end projection. Every boundary is UTC midnight, the same one the
 * ledger's `daily_usage.day` and the quota scripts use.
 */
import { formatUsd } from '../exchange'

export const dayMs = 86_400_000
const dayPattern = /^(\d{4})-(\d{2})-(\d{2})$/

export const isoDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10)

/** UTC midnight of a `YYYY-MM-DD` day in epoch ms, or null when it is not a calendar date. */
export function parseDay(text: string): number | null {
  const match = dayPattern.exec(text)
  if (!match) return null
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])]
  const ms = Date.UTC(year, month - 1, day)
  return isoDay(ms) === text ? ms : null
}

export interface MonthView {
  /** `YYYY-MM`. */
  month: string
  /** The first day, `YYYY-MM-01`. */
  firstDay: string
  today: string
  daysInMonth: number
  /** Days of the month so far, today included (1 on the 1st). */
  elapsedDays: number
}

export function monthOf(nowMs: number): MonthView {
  const now = new Date(nowMs)
  const year = now.getUTCFullYear()
  const month = now.getUTCMonth()
  return {
    month: isoDay(nowMs).slice(0, 7),
    firstDay: isoDay(Date.UTC(year, month, 1)),
    today: isoDay(nowMs),
    daysInMonth: new Date(Date.UTC(year, month + 1, 0)).getUTCDate(),
    elapsedDays: now.getUTCDate(),
  }
}

/** Month to date divided by elapsed days times days in month, rounded half up, in nano-USD. */
export function projectMonth(monthToDate: bigint, view: MonthView): bigint {
  const elapsed = BigInt(view.elapsedDays)
  return (monthToDate * BigInt(view.daysInMonth) + elapsed / 2n) / elapsed
}

/** An amount as the wire contract gives it: a 6-decimal USD string and the exact nano-USD. */
export function amount(nano: bigint): { usd: string; nano_usd: string } {
  return { usd: formatUsd(nano), nano_usd: nano.toString() }
}

const usdPattern = /^(\d{1,12})(?:\.(\d{1,9}))?$/

/** A decimal USD string (at most 9 decimals) to exact nano-USD, or null when malformed. */
export function parseUsd(text: string): bigint | null {
  const match = usdPattern.exec(text)
  if (!match) return null
  return BigInt(match[1]!) * 1_000_000_000n + BigInt((match[2] ?? '').padEnd(9, '0'))
}
