/**
 * A TCP proxy between a gateway and a Redis server that records each write a client makes,
 * as the RESP commands it carried: how tests count round trips on the request path.
 */
import type { Socket, TCPSocketListener } from 'bun'

/** Complete RESP commands at the front of `buffer`, and what is left of it. */
function takeCommands(buffer: Buffer): { commands: string[][]; rest: Buffer } {
  const commands: string[][] = []
  let at = 0
  const line = (from: number) => {
    const end = buffer.indexOf('\r\n', from)
    return end < 0 ? null : { text: buffer.toString('latin1', from, end), next: end + 2 }
  }
  parsing: while (at < buffer.length) {
    const header = line(at)
    if (!header) break
    if (!header.text.startsWith('*')) throw new Error(`not a RESP array: ${header.text}`)
    const parts: string[] = []
    let next = header.next
    for (let i = 0; i < Number(header.text.slice(1)); i++) {
      const size = line(next)
      if (!size) break parsing
      const end = size.next + Number(size.text.slice(1))
      if (end + 2 > buffer.length) break parsing
      parts.push(buffer.toString('utf8', size.next, end))
      next = end + 2
    }
    commands.push(parts)
    at = next
  }
  return { commands, rest: buffer.subarray(at) }
}

export interface RedisProxy {
  port: number
  /** Each write the gateway made, as the commands it carried. */
  writes: string[][][]
  stop(): void
}

/** Forwards every connection to `target`, recording what clients write. */
export function startRedisProxy(target: number): RedisProxy {
  const writes: string[][][] = []
  interface Side {
    upstream?: Socket<undefined>
    pending: Buffer[]
    partial: Buffer
  }
  const listener: TCPSocketListener<Side> = Bun.listen<Side>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open(client) {
        client.data = { pending: [], partial: Buffer.alloc(0) }
        void Bun.connect({
          hostname: '127.0.0.1',
          port: target,
          socket: {
            open(upstream) {
              client.data.upstream = upstream
              for (const chunk of client.data.pending.splice(0)) upstream.write(chunk)
            },
            data: (_upstream, chunk) => void client.write(chunk),
            close: () => void client.end(),
            error: () => void client.end(),
          },
        }).catch(() => client.end())
      },
      data(client, chunk) {
        const parsed = takeCommands(Buffer.concat([client.data.partial, chunk]))
        client.data.partial = Buffer.from(parsed.rest)
        if (parsed.commands.length > 0) writes.push(parsed.commands)
        if (client.data.upstream) client.data.upstream.write(chunk)
        else client.data.pending.push(Buffer.from(chunk))
      },
      close(client) {
        client.data.upstream?.end()
      },
    },
  })
  return { port: listener.port, writes, stop: () => listener.stop(true) }
}
