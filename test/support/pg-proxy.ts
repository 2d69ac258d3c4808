/**
 * A TCP proxy in front of Postgres that a test can take down two ways without touching the
 * shared server:
 *
 * - `cut` resets every open connection and stops listening, so new connections are refused,
 *   as with a stopped server (noticed at once); `restore` listens on the same port again.
 * - `partition` keeps accepting connections but lets nothing through either way, so every
 *   query waits on silence, as behind a dead network path; `heal` resets what was held (the
 *   server side gave up on it long ago) and forwards again.
 */
export interface PgProxy {
  /** A Postgres URL that goes through the proxy. */
  url: string
  /** Drops every open connection and refuses new ones: the database is "down". */
  cut(): void
  /** Listens on the same port again after `cut`. */
  restore(): void
  /** From now on no byte passes, on open connections or new ones. */
  partition(): void
  /** Resets every connection held in the partition and forwards again. */
  heal(): void
  stop(): void
}

interface Pair {
  client: Bun.Socket<Pair>
  server: Bun.Socket<undefined> | null
  early: Uint8Array[]
  up: Uint8Array[]
  down: Uint8Array[]
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
  queue.push(new Uint8Array(chunk))
  flush(socket, queue)
}

/** A proxy to `target` (a postgres:// URL); see {@link PgProxy}. */
export function pgProxy(target: string): PgProxy {
  const upstream = new URL(target)
  const pairs = new Set<Pair>()
  let silent = false
  const connectUpstream = (pair: Pair) =>
    Bun.connect({
      hostname: upstream.hostname,
      port: Number(upstream.port || 5432),
      socket: {
        open(server) {
          pair.server = server
          for (const chunk of pair.early.splice(0)) send(server, pair.up, chunk)
        },
        data(_server, chunk) {
          if (!silent) send(pair.client, pair.down, chunk)
        },
        drain: (server) => flush(server, pair.up),
        close: () => void pair.client.end(),
        error: () => void pair.client.end(),
      },
    }).catch(() => pair.client.end())
  const handlers: Bun.SocketHandler<Pair> = {
    open(client) {
      const pair: Pair = { client, server: null, early: [], up: [], down: [] }
      client.data = pair
      pairs.add(pair)
      if (!silent) void connectUpstream(pair)
    },
    data(client, chunk) {
      if (silent) return
      const pair = client.data
      if (pair.server) send(pair.server, pair.up, chunk)
      else pair.early.push(new Uint8Array(chunk))
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
  return {
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
    stop: cut,
  }
}
