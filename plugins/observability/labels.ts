/**
 * Label values that stay bounded whatever the traffic: a Prometheus series per user or per
 * free-text value would grow without end, so every label value a request can influence
 * passes through a guard that only lets known (or a bounded number of) values through.
 */

/** What a label holds when its value is not one the guard lets through. */
export const OTHER = 'other'

export interface LabelGuardOptions {
  /** The values expected (configured models, tiers...); anything else reads `other`. */
  known?: Iterable<string>
  /**
   * With no `known` list: how many distinct values are let through before the rest read
   * `other`. Values must also look like identifiers (no spaces, at most 64 characters).
   * @default 64
   */
  limit?: number
}

const identifier = /^[A-Za-z0-9._:/@+-]{1,64}$/

/** Maps a raw value to a label value from a bounded set. */
export class LabelGuard {
  private readonly allowed: Set<string>
  private readonly open: boolean
  private readonly limit: number

  constructor({ known, limit = 64 }: LabelGuardOptions = {}) {
    this.allowed = new Set(known)
    this.open = known === undefined
    this.limit = limit
  }

  value(raw: string | null | undefined): string {
    if (!raw) return 'none'
    if (this.allowed.has(raw)) return raw
    if (!this.open || this.allowed.size >= this.limit || !identifier.test(raw)) return OTHER
    this.allowed.add(raw)
    return raw
  }
}

const methods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

export function methodLabel(method: string): string {
  return methods.has(method) ? method : OTHER
}

/** Status codes are bounded by the protocol; anything outside 100-599 is a bug, not a series. */
export function statusLabel(status: number): string {
  return Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : OTHER
}

/** The route template Elysia matched; requests no route matched share one series. */
export function routeLabel(route: string | undefined): string {
  return route || 'unmatched'
}
