/**
 * The store on Redis (one server, or a Redis Cluster), shared by every gateway instance.
 *
 * The rule that shapes this file: a request never waits on a dead socket. Every call has a
 * deadline (deadlines.ts keeps them all on one timer) that rejects it however far it got, and
 * drops it from node-redis' queue if it was not written yet; the offline queue is off, so a
 * command issued while disconnected fails at once and is never replayed later (a replayed
 * INCR would count a request twice). Reconnection runs in the background and `available`
 * follows it, so quota fallback and health can react.
 *
 * Commands go straight to `sendCommand`, synchronously inside each method: node-redis writes
 * every command queued in one tick as one batch, so calls a caller issues together share a
 * round trip (on a cluster: one batch per node).
 */
import { ErrorReply, RESP_TYPES, type RedisArgument, type TypeMapping } from 'redis'
import { Deadlines } from './deadlines'
import {
  type Connection,
  type ConnectionEvents,
  isOutage,
  openConnection,
  type SendOptions,
  sleep,
} from './redis-connection'
import {
  type ScriptArg,
  type ScriptReply,
  type Store,
  type StoreScript,
  StoreUnavailableError,
} from './store'

export interface RedisStoreOptions {
  /**
   * `redis[s]://[[user][:password]@]host[:port][/db]` of a single Redis.
   * @default undefined
   */
  url?: string
  /**
   * Seed nodes of a Redis Cluster (`host:port` or URLs); when non-empty they win over `url`.
   * @default []
   */
  clusterNodes?: string[]
  /**
   * Prepended to every key; must not contain `{`, or it would decide the cluster hash slot.
   * @default 'tg:'
   */
  keyPrefix?: string
  /**
   * Longest a command may take before it rejects with StoreUnavailableError.
   * @default 250
   */
  commandTimeoutMs?: number
  /**
   * Longest one TCP connect attempt may take.
   * @default 1000
   */
  connectTimeoutMs?: number
  /**
   * Cap of the exponential backoff between reconnect attempts.
   * @default 2000
   */
  maxReconnectDelayMs?: number
  /**
   * Called on every change of `available` (the error says why it went away).
   * @default undefined
   */
  onStateChange?: (available: boolean, error?: unknown) => void
}

type StateListener = (available: boolean, error?: unknown) => void
const BUFFERS: TypeMapping = { [RESP_TYPES.BLOB_STRING]: Buffer }
// Probe timeouts in a row while the socket still claims to be fine: a half-open connection
// that TCP may take minutes to notice, so it is replaced.
const STALLS_BEFORE_RECONNECT = 3

/** The server did not answer in time (as opposed to refusing or being disconnected). */
class StoreTimeoutError extends StoreUnavailableError {}

export class RedisStore implements Store {
  readonly kind = 'redis' as const
  readonly mode: 'single' | 'cluster'
  private readonly prefix: string
  private readonly timeoutMs: number
  private readonly deadlines: Deadlines
  private readonly connectTimeoutMs: number
  private readonly maxDelayMs: number
  private readonly listeners = new Set<StateListener>()
  private readonly clusterNodes: string[]
  private readonly url: string | undefined
  private conn: Connection
  private isAvailable = false
  private error: unknown
  private probing = false
  private closed = false

  constructor(options: RedisStoreOptions) {
    this.clusterNodes = options.clusterNodes?.filter(Boolean) ?? []
    this.url = options.url
    if (!this.url && this.clusterNodes.length === 0)
      throw new TypeError('RedisStore needs url or clusterNodes')
    this.mode = this.clusterNodes.length > 0 ? 'cluster' : 'single'
    this.prefix = options.keyPrefix ?? 'tg:'
    this.timeoutMs = options.commandTimeoutMs ?? 250
    this.deadlines = new Deadlines(this.timeoutMs)
    this.connectTimeoutMs = options.connectTimeoutMs ?? 1000
    this.maxDelayMs = options.maxReconnectDelayMs ?? 2000
    if (options.onStateChange) this.listeners.add(options.onStateChange)
    this.conn = this.open()
  }

  get available(): boolean {
    return this.isAvailable
  }

  /** Why the store last became (or stayed) unavailable; for health messages. */
  get lastError(): unknown {
    return this.error
  }

  /** Subscribes to availability changes; returns the unsubscribe function. */
  onStateChange(listener: StateListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** Resolves true once available, false if that takes longer than `timeoutMs`; never rejects. */
  waitUntilAvailable(timeoutMs = this.connectTimeoutMs): Promise<boolean> {
    if (this.isAvailable) return Promise.resolve(true)
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(false), timeoutMs)
      const stop = this.onStateChange((available) => available && finish(true))
      const finish = (ok: boolean) => {
        clearTimeout(timer)
        stop()
        resolve(ok)
      }
    })
  }

  async get(key: string): Promise<Uint8Array | null> {
    const full = this.key(key)
    const reply = await this.exec('GET', full, ['GET', full], { typeMapping: BUFFERS })
    if (reply === null) return null
    if (!(reply instanceof Uint8Array)) throw new TypeError('GET answered a non-string value')
    // A plain view, not the Buffer subclass: callers compare and slice it like any Uint8Array.
    return new Uint8Array(reply.buffer, reply.byteOffset, reply.byteLength)
  }

  async set(key: string, value: Uint8Array | string, ttlMs: number): Promise<void> {
    const full = this.key(key)
    const data =
      typeof value === 'string' ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength)
    const args: RedisArgument[] = ['SET', full, data]
    if (ttlMs > 0) args.push('PX', String(Math.ceil(ttlMs)))
    await this.exec('SET', full, args)
  }

  async del(...keys: string[]): Promise<number> {
    if (keys.length === 0) return 0
    const full = keys.map((key) => this.key(key))
    if (this.mode === 'single') return Number(await this.exec('DEL', full[0], ['DEL', ...full]))
    // Keys of different slots cannot share one DEL on a cluster; one per key, still one batch per node.
    const counts = await Promise.all(full.map((k) => this.exec('DEL', k, ['DEL', k])))
    return counts.reduce<number>((sum, count) => sum + Number(count), 0)
  }

  async incr(key: string): Promise<number> {
    const full = this.key(key)
    return Number(await this.exec('INCR', full, ['INCR', full]))
  }

  async run<R extends ScriptReply>(script: StoreScript<R>, keys: string[], args: ScriptArg[]): Promise<R> {
    if (keys.length !== script.numberOfKeys) {
      throw new TypeError(`script ${script.name} takes ${script.numberOfKeys} keys, got ${keys.length}`)
    }
    const full = keys.map((key) => this.key(key))
    const tail = [String(full.length), ...full, ...args.map(String)]
    try {
      return (await this.exec('EVALSHA', full[0], ['EVALSHA', script.sha1, ...tail])) as R
    } catch (error) {
      // A restarted server or a new cluster node has an empty script cache; EVAL loads it there.
      if (!(error instanceof ErrorReply && error.message.startsWith('NOSCRIPT'))) throw error
      return (await this.exec('EVAL', full[0], ['EVAL', script.lua, ...tail])) as R
    }
  }

  async ping(): Promise<number> {
    const started = performance.now()
    await this.guard('PING', (abortSignal) => this.conn.pingAll({ abortSignal, timeout: 0 }))
    return performance.now() - started
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.isAvailable = false
    await this.conn.close(this.timeoutMs)
  }

  private key(key: string): string {
    return this.prefix + key
  }

  private exec(op: string, firstKey: string | undefined, args: RedisArgument[], options: SendOptions = {}) {
    return this.guard(op, (abortSignal) =>
      this.conn.send(firstKey, args, { ...options, abortSignal, timeout: 0 }),
    )
  }

  /** Runs one operation against the live connection with a deadline; maps failures to StoreUnavailableError. */
  private guard<T>(op: string, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('redis store is closed'))
    if (!this.conn.ready) {
      return Promise.reject(new StoreUnavailableError(`redis ${op}: not connected`, { cause: this.error }))
    }
    return new Promise<T>((resolve, reject) => {
      const deadline = this.deadlines.start(() => {
        const error = new StoreTimeoutError(`redis ${op}: no answer within ${this.timeoutMs} ms`)
        this.setState(false, error)
        reject(error)
      })
      // After the deadline the caller has its answer; a late outcome (say, of a connection
      // replaced meanwhile, or the drop of an unwritten command) must not move the state again.
      const fail = (error: unknown) => {
        if (deadline.settle()) reject(this.classify(op, error))
      }
      try {
        work(deadline.signal).then((value) => {
          if (deadline.settle()) resolve(value)
        }, fail)
      } catch (error) {
        fail(error)
      }
    })
  }

  private classify(op: string, error: unknown): unknown {
    if (!isOutage(error)) return error
    const message = error instanceof Error ? error.message : String(error)
    const wrapped = new StoreUnavailableError(`redis ${op}: ${message}`, { cause: error })
    this.setState(false, wrapped)
    return wrapped
  }

  private setState(available: boolean, error?: unknown): void {
    if (error !== undefined) this.error = error
    if (this.closed || available === this.isAvailable) return
    this.isAvailable = available
    for (const listener of this.listeners) {
      try {
        listener(available, error)
      } catch {
        // a listener's failure must not break the store's state machine
      }
    }
    if (!available) void this.probe()
  }

  /**
   * While unavailable: pings with backoff until every master answers. node-redis reconnects
   * dropped sockets itself; this catches what it cannot see (a server that stopped answering
   * on an open socket) and replaces a connection that stays stalled.
   */
  private async probe(): Promise<void> {
    if (this.probing) return
    this.probing = true
    let delay = 50
    let stalls = 0
    try {
      while (!this.closed && !this.isAvailable) {
        if (this.conn.ready) {
          const error = await this.check()
          if (error === undefined) break
          // Only silence counts: a refused or offline node is node-redis' to reconnect.
          if (error instanceof StoreTimeoutError && this.conn.ready && ++stalls >= STALLS_BEFORE_RECONNECT) {
            stalls = 0
            const stale = this.conn
            this.conn = this.open()
            void stale.close(this.timeoutMs)
          }
        }
        await sleep(delay)
        delay = Math.min(delay * 2, this.maxDelayMs)
      }
    } finally {
      this.probing = false
    }
  }

  /** One health check; flips to available when it passes, else answers why not. */
  private async check(): Promise<unknown> {
    try {
      await this.ping()
      this.setState(true)
      return undefined
    } catch (error) {
      this.error = error
      return error ?? new Error('ping failed')
    }
  }

  private open(): Connection {
    // Events of a connection that was replaced (or of a closed store) must not move the state.
    let conn: Connection | undefined
    const current = () => !this.closed && conn !== undefined && conn === this.conn
    const events: ConnectionEvents = {
      down: (error) => current() && this.setState(false, error),
      up: () => current() && void this.check(),
      stopped: () => this.closed || (conn !== undefined && conn !== this.conn),
    }
    const target = { url: this.url, clusterNodes: this.clusterNodes }
    const timing = { connectTimeoutMs: this.connectTimeoutMs, maxDelayMs: this.maxDelayMs }
    conn = openConnection(target, timing, events)
    return conn
  }
}
