/**
 * The two shapes of a node-redis connection (one client, or a cluster) behind one small
 * interface, so the store's timeout, state and retry logic is written once. Both run with
 * the offline queue off: a command issued while disconnected fails now, never replays later.
 */
import { createClient, createCluster, ErrorReply, type RedisArgument, type TypeMapping } from 'redis'

export interface SendOptions {
  typeMapping?: TypeMapping
  /** Aborting it drops the command if it was not written yet (the store's deadline). */
  abortSignal?: AbortSignal
  /**
   * node-redis' own per-command timeout (an AbortSignal.timeout per command, 5 s unless set):
   * the store passes 0 (none), since its deadline already covers the command.
   */
  timeout?: number
}

/** What the store needs from a node-redis client or cluster, so the rest is written once. */
export interface Connection {
  readonly ready: boolean
  send(firstKey: string | undefined, args: RedisArgument[], options: SendOptions): Promise<unknown>
  /** Pings every master: a cluster is only usable when each slot's owner answers. */
  pingAll(options: SendOptions): Promise<void>
  /** QUITs, and destroys the socket if that takes longer than `deadlineMs`; never rejects. */
  close(deadlineMs: number): Promise<void>
}

export interface ConnectionEvents {
  down(error: unknown): void
  up(): void
  /** True once this connection was closed or replaced: its retry loops end. */
  stopped(): boolean
}

interface SocketOptions {
  connectTimeout: number
  reconnectStrategy: (retries: number) => number
}

export interface ConnectionTarget {
  url?: string
  /** Non-empty: a cluster, seeded from these nodes. */
  clusterNodes: string[]
}

export interface ConnectionTiming {
  connectTimeoutMs: number
  maxDelayMs: number
}

export function openConnection(
  target: ConnectionTarget,
  timing: ConnectionTiming,
  events: ConnectionEvents,
): Connection {
  const socket: SocketOptions = {
    connectTimeout: timing.connectTimeoutMs,
    // Capped exponential backoff with jitter, so a fleet does not reconnect in lockstep.
    reconnectStrategy: (retries) => backoff(retries, timing.maxDelayMs),
  }
  if (target.clusterNodes.length > 0)
    return openCluster(target.clusterNodes, socket, events, timing.maxDelayMs)
  if (!target.url) throw new TypeError('a Redis connection needs a url or cluster nodes')
  return openClient(target.url, socket, events)
}

function openClient(url: string, socket: SocketOptions, events: ConnectionEvents): Connection {
  const client = createClient({ url, socket, RESP: 3, disableOfflineQueue: true })
  // Without an 'error' listener node-redis' EventEmitter would crash the process on a disconnect.
  client.on('error', (error: unknown) => events.down(error))
  client.on('ready', () => events.up())
  // Resolves on the first 'ready' (retrying meanwhile); rejects only when closed before that.
  client.connect().catch((error: unknown) => events.down(error))
  return {
    get ready() {
      return client.isReady
    },
    send: (_firstKey, args, options) => client.sendCommand(args, options),
    pingAll: async (options) => {
      await client.sendCommand(['PING'], options)
    },
    close: (deadlineMs) =>
      closeWithin(
        deadlineMs,
        () => client.close(),
        () => client.destroy(),
      ),
  }
}

function openCluster(
  nodes: string[],
  socket: SocketOptions,
  events: ConnectionEvents,
  maxDelayMs: number,
): Connection {
  const cluster = createCluster({
    rootNodes: nodes.map((node) => ({ url: node.includes('://') ? node : `redis://${node}` })),
    defaults: { socket, disableOfflineQueue: true },
    RESP: 3,
  })
  let destroyed = false
  cluster.on('error', (error: unknown) => events.down(error))
  cluster.on('node-error', (error: unknown) => events.down(error))
  cluster.on('node-ready', () => events.up())
  // Unlike a client, a cluster gives up when no seed answers at startup; keep trying.
  void (async () => {
    for (let attempt = 0; !destroyed && !events.stopped(); attempt++) {
      try {
        await cluster.connect()
        events.up()
        return
      } catch (error) {
        events.down(error)
        await sleep(backoff(attempt, maxDelayMs))
      }
    }
  })()
  return {
    get ready() {
      return cluster.isReady
    },
    send: (firstKey, args, options) => cluster.sendCommand(firstKey, false, args, options),
    pingAll: async (options) => {
      await Promise.all(
        cluster.masters.map(async (master) =>
          (await cluster.nodeClient(master)).sendCommand(['PING'], options),
        ),
      )
    },
    close: (deadlineMs) => {
      destroyed = true
      return closeWithin(
        deadlineMs,
        () => cluster.close(),
        () => cluster.destroy(),
      )
    },
  }
}

// Reply errors that mean "the server cannot serve now", not "the command is wrong".
const TRANSIENT_REPLY = /^(CLUSTERDOWN|LOADING|MASTERDOWN|TRYAGAIN|BUSY)\b/

/**
 * Whether a failure means Redis cannot serve (callers degrade) rather than the command being
 * wrong (a bug, passed through as is): socket and client-state errors are outages; reply
 * errors are not, except the few a healthy-but-busy or failing-over server sends.
 */
export function isOutage(error: unknown): boolean {
  if (error instanceof ErrorReply) return TRANSIENT_REPLY.test(error.message)
  return !(error instanceof TypeError || error instanceof RangeError)
}

function backoff(retries: number, capMs: number): number {
  return Math.min(capMs, 50 * 2 ** retries) + Math.random() * 50
}

export function sleep(ms: number): Promise<void> {
  // Unreferenced: a background retry must not keep a finished process alive.
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}

/** QUIT waits for replies already owed; a dead server owes them forever, so it gets a deadline. */
async function closeWithin(deadlineMs: number, close: () => Promise<unknown>, destroy: () => void) {
  let timer: ReturnType<typeof setTimeout> | undefined
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, deadlineMs)
  })
  // Not open (never connected, or already gone): close() refuses, and destroy() below suffices.
  const closing = Promise.resolve().then(close)
  await Promise.race([closing.catch(() => undefined), deadline])
  clearTimeout(timer)
  try {
    destroy()
  } catch {
    // already closed: nothing left to release
  }
}
