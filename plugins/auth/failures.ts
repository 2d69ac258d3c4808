/**
 * Failed authentications: each one is reported (for a metric), and wrong credentials are
 * limited per client address by a small in-process limiter. Keys carry 256 bits and cannot
 * be guessed, but the admin key is chosen by an operator, and a client hammering the gateway
 * with a bad key costs a hash and possibly a query per try; so an address that made too many
 * wrong guesses in a minute is refused (429 with Retry-After) for the rest of that minute,
 * its guesses unchecked.
 *
 * The address is the TCP peer; X-Forwarded-For is honoured only as far as the operator says
 * proxies append to it (`trustedProxyHops`), since any client can send one. IPv6 addresses
 * count per /64, the block one subscriber usually gets, so rotating addresses within it
 * gains nothing. The limiter is per instance: N instances allow up to N times the limit.
 */
import { ApiError } from '../exchange'

export type AuthFailureReason =
  | 'missing_key'
  | 'invalid_key'
  | 'missing_admin_key'
  | 'invalid_admin_key'
  | 'admin_disabled'
  | 'throttled'

/** The reasons that are guesses: a credential was presented and was wrong. Only these count. */
const guesses: ReadonlySet<AuthFailureReason> = new Set(['invalid_key', 'invalid_admin_key'])

const windowMs = 60_000
/** Longest address key kept: an X-Forwarded-For entry is client-supplied text. */
const maxAddressLength = 64

export interface AuthFailuresOptions {
  /**
   * Wrong credentials one address may present per minute; past it the address gets 429
   * until the minute is over. null turns the limiter off (failures are still reported).
   * @default 20
   */
  perMinute?: number | null
  /**
   * Reverse proxies in front of the gateway that append to X-Forwarded-For. 0 ignores the
   * header; N takes its Nth entry from the right as the client address.
   * @default 0
   */
  trustedProxyHops?: number
  /**
   * Addresses tracked at once; beyond it the oldest window is dropped, so a flood of
   * addresses costs bounded memory.
   * @default 10000
   */
  maxAddresses?: number
  /**
   * Told of every failed authentication, with its reason (for a counter). Unknown and
   * revoked keys are both `invalid_key`: nothing tells them apart.
   * @default no-op
   */
  onAuthFailure?: (reason: AuthFailureReason) => void
  /**
   * Clock in epoch ms; tests inject one.
   * @default Date.now
   */
  now?: () => number
}

/** What Elysia's context offers as `server` (Bun's server); null when there is none (`app.handle`). */
export interface PeerSource {
  requestIP(request: Request): { address: string } | null
}

interface Window {
  startedAt: number
  failures: number
}

/** Groups an address into the unit it is limited by: IPv4 as is, IPv6 by its /64. */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)
  if (mapped) return mapped[1]!
  if (!address.includes(':')) return address.slice(0, maxAddressLength)
  const [head = '', tail] = address.split('%', 1)[0]!.split('::', 2)
  const headGroups = head === '' ? [] : head.split(':')
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':')
  const zeros =
    tail === undefined ? [] : Array<string>(Math.max(0, 8 - headGroups.length - tailGroups.length)).fill('0')
  const groups = [...headGroups, ...zeros, ...tailGroups].slice(0, 4)
  return `${groups.map((group) => (Number.parseInt(group, 16) || 0).toString(16)).join(':')}::/64`
}

export function throttled(waitMs: number): ApiError {
  const seconds = Math.max(1, Math.ceil(waitMs / 1000))
  return new ApiError({
    status: 429,
    message: `Too many failed authentication attempts from this address; retry after ${seconds} s.`,
    code: 'too_many_auth_failures',
    headers: { 'retry-after': String(seconds) },
  })
}

export class AuthFailures {
  private readonly windows = new Map<string, Window>()
  /** When the newest window started: once it is over, so is every other. */
  private latestStart = Number.NEGATIVE_INFINITY
  private readonly perMinute: number | null
  private readonly trustedProxyHops: number
  private readonly maxAddresses: number
  private readonly onAuthFailure: (reason: AuthFailureReason) => void
  private readonly now: () => number

  constructor({
    perMinute = 20,
    trustedProxyHops = 0,
    maxAddresses = 10_000,
    onAuthFailure = () => {},
    now = Date.now,
  }: AuthFailuresOptions = {}) {
    this.perMinute = perMinute
    this.trustedProxyHops = trustedProxyHops
    this.maxAddresses = maxAddresses
    this.onAuthFailure = onAuthFailure
    this.now = now
  }

  /** The key a request's failures count against, or null when its address is unknown. */
  addressOf(request: Request, server: PeerSource | null): string | null {
    if (this.trustedProxyHops > 0) {
      const forwarded = (request.headers.get('x-forwarded-for') ?? '')
        .split(',')
        .map((entry) => entry.trim())
        .filter(Boolean)
      const client = forwarded[forwarded.length - this.trustedProxyHops]
      if (client !== undefined) return addressKey(client)
    }
    const peer = server?.requestIP(request)?.address
    return peer ? addressKey(peer) : null
  }

  /**
   * Whether any address has guesses counted in a window still running, so that a request's
   * address matters before it fails: otherwise `blockedFor` is 0 for every address, and
   * finding one (the peer lookup, the /64 grouping: microseconds) can wait for a failure.
   */
  get counting(): boolean {
    return this.perMinute !== null && this.now() < this.latestStart + windowMs
  }

  /** Milliseconds until the address may authenticate again; 0 when it may now. */
  blockedFor(address: string | null): number {
    if (address === null || this.perMinute === null) return 0
    const window = this.windows.get(address)
    if (!window) return 0
    const left = window.startedAt + windowMs - this.now()
    if (left <= 0) {
      this.windows.delete(address)
      return 0
    }
    return window.failures >= this.perMinute ? left : 0
  }

  /** Reports a failure; a guess also counts against its address. */
  fail(reason: AuthFailureReason, address: string | null): void {
    this.onAuthFailure(reason)
    if (address === null || this.perMinute === null || !guesses.has(reason)) return
    const now = this.now()
    const window = this.windows.get(address)
    if (window && now < window.startedAt + windowMs) {
      window.failures++
      return
    }
    this.windows.delete(address)
    if (this.windows.size >= this.maxAddresses) {
      const oldest = this.windows.keys().next().value
      if (oldest !== undefined) this.windows.delete(oldest)
    }
    this.windows.set(address, { startedAt: now, failures: 1 })
    this.latestStart = now
  }

  /** Addresses currently tracked (for tests of the bound). */
  get size(): number {
    return this.windows.size
  }
}
