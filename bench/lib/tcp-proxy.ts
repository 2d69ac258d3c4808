/**
 * A TCP proxy in front of a server given by URL (Postgres, Redis...), that a bench (or a test)
 * can degrade without touching the shared server:
 *
 * - `cut` resets every open connection and stops listening, so new connections are refused,
 *   as with a stopped server (noticed at once); `restore` listens on the same port again.
 * - `partition` keeps accepting connections but lets nothing through either way, so every
 *   request waits on silence, as behind a dead network path; `heal` resets what was held (the
 *   server side gave up on it long ago) and forwards again.
 * - `delayMs` holds every client-to-server chunk that long (in order), as a slow server.
 *
 * A general tool, so it lives here rather than in test/support: benches must not depend on
 * test internals, and test/support can import it from here.
 */
export interface TcpProxy {
  /** The target URL with the proxy's host and port. */
  url: string
  /** Drops every open connection and refuses new ones: the server is "down". */
  cut(): void
  /** Listens on the same port again after `cut`. */
  restore(): void
  /** From now on no byte passes, on open connections or new ones. */
  partition(): void
  /** Resets every connection held in the partition and forwards again. */
  heal(): void
  /** How long each client-to-server chunk is held, in ms; 0 forwards at once. */
  delayMs: number
  stop(): void
}

interface Pair {
  client: Bun.Socket<Pair>
  server: Bun.Socket<undefined> | null
  early: Uint8Array[]
  up: Uint8Array[]
  down: Uint8Array[]
  /** performance.now() before which the next delayed chunk may not go: order is kept. */
  releaseAt: number
}

/** Writes what the socket's buffer takes and keeps the rest, in order, for its `drain`. */
function flush(socket: Bun.Socket<unknown>, queue: Uint8Array[]): void {
  while (queue.length > 0) {
    const chunk = queue[0]!
    const written = socket.write(chunk)
    if (written < chunk.byteLength) {
      queue[0] = chunk.subarray(Math.max(0, written))
      return
    }
    queue.shift()
  }
}

function send(socket: Bun.Socket<unknown>, queue: Uint8Array[], chunk: Uint8Array): void {
  queue.push(chunk)
  flush(socket, queue)
}

const defaultPorts: Record<string, number> = { 'postgres:': 5432, 'postgresql:': 5432, 'redis:': 6379 }

/** A proxy to `target` (a URL with host and port, or a scheme whose default port is known). */
export function tcpProxy(target: string): TcpProxy {
  const upstream = new URL(target)
  const upstreamPort = Number(upstream.port || defaultPorts[upstream.protocol])
  const pairs = new Set<Pair>()
  let silent = false
  const forward = (pair: Pair, chunk: Uint8Array) => {
    if (silent) return
    if (pair.server) send(pair.server, pair.up, chunk)
    else pair.early.push(chunk)
  }
  const connectUpstream = (pair: Pair) =>
    Bun.connect({
      hostname: upstream.hostname,
      port: upstreamPort,
      socket: {
        open(server) {
          pair.server = server
          for (const chunk of pair.early.splice(0)) send(server, pair.up, chunk)
        },
        data(_server, chunk) {
          if (!silent) send(pair.client, pair.down, new Uint8Array(chunk))
        },
        drain: (server) => flush(server, pair.up),
        close: () => void pair.client.end(),
        error: () => void pair.client.end(),
      },
    }).catch(() => pair.client.end())
  const handlers: Bun.SocketHandler<Pair> = {
    open(client) {
      const pair: Pair = { client, server: null, early: [], up: [], down: [], releaseAt: 0 }
      client.data = pair
      pairs.add(pair)
      if (!silent) void connectUpstream(pair)
    },
    data(client, chunk) {
      if (silent) return
      const pair = client.data
      const copy = new Uint8Array(chunk)
      const now = performance.now()
      // Never earlier than a chunk sent before it, even when the delay just went down.
      const at = Math.max(now + proxy.delayMs, pair.releaseAt)
      pair.releaseAt = at
      if (at > now) setTimeout(() => forward(pair, copy), at - now)
      else forward(pair, copy)
    },
    drain: (client) => flush(client, client.data.down),
    close(client) {
      pairs.delete(client.data)
      client.data?.server?.end()
    },
    error(client) {
      client.data?.server?.end()
    },
  }
  let listener: Bun.TCPSocketListener<Pair> | null = Bun.listen<Pair>({
    hostname: '127.0.0.1',
    port: 0,
    socket: handlers,
  })
  const port = listener.port
  const via = new URL(target)
  via.hostname = '127.0.0.1'
  via.port = String(port)
  const resetAll = () => {
    for (const pair of pairs) {
      pair.server?.terminate()
      pair.client.terminate()
    }
    pairs.clear()
  }
  const cut = () => {
    listener?.stop(true)
    listener = null
    resetAll()
  }
  const proxy: TcpProxy = {
    url: via.toString(),
    cut,
    restore() {
      listener ??= Bun.listen<Pair>({ hostname: '127.0.0.1', port, socket: handlers })
    },
    partition() {
      silent = true
    },
    heal() {
      resetAll()
      silent = false
    },
    delayMs: 0,
    stop: cut,
  }
  return proxy
}
