/**
 * The relay's own work on each chunk, without a server: the upstream's frame text passes
 * through as it came (the model renamed, a `"usage":null` the client did not ask for dropped)
 * instead of being serialised again, anything it cannot edit exactly is serialised, and the
 * registry's shared ticker sends heartbeats while the upstream is silent.
 */
import { describe, expect, test } from 'bun:test'
import { Exchange, SettlementHub } from '../plugins/exchange'
import { StreamRegistry } from '../plugins/streams'
import { relayStream } from '../src/routes/chat-stream'
import type { ChatChunk } from '../src/upstream/provider'
import { withRawData } from '../src/upstream/sse'

const parsed = (raw: string) => withRawData(JSON.parse(raw) as ChatChunk, raw)

const chunkText = (model: string, content: string, tail = ',"usage":null') =>
  `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"${model}","choices":[{"index":0,"delta":{"content":"${content}"},"finish_reason":null}]${tail}}`

async function* upstream(chunks: ChatChunk[], silenceMs = 0) {
  for (const [i, chunk] of chunks.entries()) {
    if (i > 0 && silenceMs > 0) await Bun.sleep(silenceMs)
    yield chunk
  }
}

/** Relays `chunks` and answers the text each frame would put on the wire. */
async function relay(
  chunks: ChatChunk[],
  { includeUsage = false, heartbeatMs = 15_000, silenceMs = 0 } = {},
) {
  const exchange = new Exchange(new SettlementHub(), { id: crypto.randomUUID(), method: 'POST', path: '/' })
  const iterator = upstream(chunks, silenceMs)
  const first = await iterator.next()
  const frames: string[] = []
  for await (const frame of relayStream(iterator, first, {
    exchange,
    clientModel: 'client-model',
    includeUsage,
    clientSignal: new AbortController().signal,
    abortUpstream: () => {},
    streams: new StreamRegistry(heartbeatMs, Date.now),
  }))
    frames.push((frame as { toSSE(): string }).toSSE())
  return { frames, exchange }
}

describe('relayStream', () => {
  test("passes the upstream's frame text on, renamed, without a usage the client did not ask for", async () => {
    const { frames } = await relay([parsed(chunkText('up-1', 'hi')), parsed(chunkText('up-1', ' there'))])
    expect(frames).toEqual([
      `data: ${chunkText('client-model', 'hi', '')}\n\n`,
      `data: ${chunkText('client-model', ' there', '')}\n\n`,
      'data: [DONE]\n\n',
    ])
  })

  test('keeps `"usage":null` for a client that asked for usage, and its spacing as sent', async () => {
    const spaced =
      '{"model":"up-1", "usage":null, "choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}'
    const { frames } = await relay([parsed(spaced)], { includeUsage: true })
    expect(frames[0]).toBe(`data: ${spaced.replace('"up-1"', '"client-model"')}\n\n`)
  })

  test('serialises a chunk whose text it cannot edit exactly, or that came without text', async () => {
    // The model's name twice: which one is the chunk's is not for a text search to say.
    const twice = `{"model":"up-1","choices":[{"index":0,"delta":{"content":"a","model":"up-1"},"finish_reason":null}]}`
    const bare: ChatChunk = JSON.parse(chunkText('up-1', 'b'))
    const { frames } = await relay([parsed(twice), bare])
    const data = frames.slice(0, 2).map((frame) => JSON.parse(frame.slice(6)))
    expect(data[0]).toEqual({
      model: 'client-model',
      choices: [{ index: 0, delta: { content: 'a', model: 'up-1' }, finish_reason: null }],
    })
    expect(data[1].model).toBe('client-model')
    expect('usage' in data[1]).toBe(false)
  })

  test('a chunk the upstream sent over several data: lines reaches the client as one whole line', async () => {
    // The SSE parser joins an event's data: lines with LF; the relay writes one data: line.
    const multiLine =
      '{"model":"up-1",\n"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}],"usage":null}'
    const { frames } = await relay([parsed(multiLine)])
    expect(frames[0]!.endsWith('\n\n')).toBe(true)
    expect(frames[0]!.slice(0, -2)).not.toContain('\n')
    expect(JSON.parse(frames[0]!.slice(6))).toEqual({
      model: 'client-model',
      choices: [{ index: 0, delta: { content: 'a' }, finish_reason: null }],
    })
  })

  test('a silent upstream gets heartbeats from the shared ticker, and a stream without usage is estimated', async () => {
    const { frames, exchange } = await relay(
      [parsed(chunkText('up-1', 'a')), parsed(chunkText('up-1', 'b'))],
      {
        heartbeatMs: 20,
        silenceMs: 150,
      },
    )
    expect(frames.filter((frame) => frame === ': ping\n\n').length).toBeGreaterThanOrEqual(3)
    expect(frames.at(-1)).toBe('data: [DONE]\n\n')
    expect(exchange.settlement?.outcome).toBe('ok')
    expect(exchange.usage.completionTokens).toBe(2)
  })
})
