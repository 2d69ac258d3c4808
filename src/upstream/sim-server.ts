/**
 * The simulator as a standalone OpenAI-compatible HTTP server (`bun run sim`), so tests and
 * benchmarks can put a real network hop behind the gateway. Beyond the OpenAI routes it
 * takes scripted faults (`POST /_sim/faults`) and counts what it saw (`GET /_sim/stats`), so
 * tests can prove the gateway's handling of resets, stalls, cut streams and client aborts.
 */
import { type ChatRequest, type EmbeddingRequest, UpstreamError } from './provider'
import { type SimulatorOptions, SimulatorProvider } from './simulator'
import { SSE_DONE, sseFrameBytes } from './sse'

export interface SimServerOptions extends Omit<SimulatorOptions, 'name' | 'random'> {
  /** 0 picks a free port. */
  port?: number
  /** @default '127.0.0.1' */
  hostname?: string
}

/** What to do to the next model request (chat or embeddings); `times` requests in a row. */
export interface SimFault {
  /** Answer this status with an OpenAI error envelope. */
  status?: number
  /** Seconds, sent as Retry-After with `status`. */
  retry_after?: number
  /** Close the connection without answering. */
  reset?: boolean
  /** Wait this long before the first byte. */
  stall_ms?: number
  /** Stream: send this many chunks, then close the connection without `[DONE]`. */
  fail_after_chunks?: number
  /** Stream: pause for `ms` after this many chunks, then go on. */
  stall_after_chunks?: { chunks: number; ms: number }
  /** @default 1 */
  times?: number
}

export interface SimStats {
  requests: number
  chat: number
  chatStream: number
  embeddings: number
  /** Model requests whose client went away before the answer was complete. */
  aborted: number
}

export interface SimServer {
  /** Base URL ending in `/v1`, ready for an OpenAI client's `baseURL`. */
  readonly url: string
  readonly port: number
  /** Live counters: the same object is updated in place. */
  readonly stats: SimStats
  /** Headers of the last `/v1/*` request, to check what the gateway forwards. */
  readonly lastHeaders: Headers | null
  /** The same as `POST /_sim/faults`, for tests that hold the server in process. */
  addFaults(faults: SimFault[]): void
  /** Zeroes the stats and drops pending faults and the last headers. */
  reset(): void
  stop(): Promise<void>
}

const encoder = new TextEncoder()
const CUT_FLUSH_MS = 20
const modelIds = ['sim-1', 'sim-embed-1']

function apiError(status: number, message: string, code: string | null, headers?: Record<string, string>) {
  const type = status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error'
  return Response.json({ error: { message, type, param: null, code } }, { status, headers })
}

/** An answer that tears the connection down: an errored body makes Bun drop the socket. */
function connectionReset(): Response {
  // error() without a reason: Bun logs errors given as reasons, and this one is intended.
  return new Response(new ReadableStream({ start: (controller) => controller.error() }))
}

/** Waits `ms`, or less when the client goes away: a stall must not outlive its request. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value)

export async function startSimServer(options: SimServerOptions = {}): Promise<SimServer> {
  const { port = 0, hostname = '127.0.0.1', ...settings } = options
  const provider = new SimulatorProvider({ name: 'sim-server', ...settings })
  const stats: SimStats = { requests: 0, chat: 0, chatStream: 0, embeddings: 0, aborted: 0 }
  let faults: Array<{ fault: SimFault; remaining: number }> = []
  let lastHeaders: Headers | null = null

  const nextFault = (): SimFault | undefined => {
    const head = faults[0]
    if (!head) return undefined
    head.remaining--
    if (head.remaining <= 0) faults.shift()
    return head.fault
  }

  const addFaults = (list: SimFault[]) => {
    for (const fault of list) faults.push({ fault, remaining: Math.max(1, fault.times ?? 1) })
  }

  const reset = () => {
    Object.assign(stats, { requests: 0, chat: 0, chatStream: 0, embeddings: 0, aborted: 0 })
    faults = []
    lastHeaders = null
  }

  /** A per-request `x-sim-ttft-ms` gets its own simulator; everything else shares one. */
  const providerFor = (request: Request): SimulatorProvider => {
    const ttft = Number(request.headers.get('x-sim-ttft-ms') ?? Number.NaN)
    return Number.isFinite(ttft) && ttft >= 0
      ? new SimulatorProvider({ name: 'sim-server', ...settings, ttftMs: ttft })
      : provider
  }

  async function control(request: Request, path: string): Promise<Response> {
    if (path === '/_sim/stats' && request.method === 'GET')
      return Response.json({ ...stats, pending_faults: faults.length })
    if (path === '/_sim/reset' && request.method === 'POST') {
      reset()
      return Response.json({ ok: true })
    }
    if (path === '/_sim/faults' && request.method === 'POST') {
      const body: unknown = await request.json().catch(() => undefined)
      const list = Array.isArray(body) ? body : [body]
      if (!list.every(isObject))
        return apiError(400, 'Faults must be a JSON array of objects.', 'invalid_faults')
      addFaults(list as SimFault[])
      return Response.json({ queued: list.length, pending_faults: faults.length })
    }
    return apiError(404, `No route for ${request.method} ${path}.`, 'not_found')
  }

  async function model(request: Request, path: string): Promise<Response> {
    const body: unknown = await request.json().catch(() => undefined)
    if (!isObject(body) || typeof body.model !== 'string')
      return apiError(400, 'The body must be a JSON object with a model.', 'invalid_request')
    const isChat = path === '/v1/chat/completions'
    if (isChat && (!Array.isArray(body.messages) || body.messages.length === 0))
      return apiError(400, "'messages' must be a non-empty array.", 'invalid_value')
    if (!isChat && !(typeof body.input === 'string' || Array.isArray(body.input)))
      return apiError(400, "'input' must be a string or an array.", 'invalid_value')
    const streaming = isChat && body.stream === true
    if (isChat) stats[streaming ? 'chatStream' : 'chat']++
    else stats.embeddings++

    let complete = false
    const countAbort = () => {
      if (!complete) stats.aborted++
    }
    request.signal.addEventListener('abort', countAbort, { once: true })
    const fault = nextFault()
    await sleep(fault?.stall_ms ?? 0, request.signal)
    if (fault?.reset) {
      complete = true
      return connectionReset()
    }
    if (fault?.status) {
      complete = true
      const headers =
        fault.retry_after === undefined ? undefined : { 'retry-after': String(fault.retry_after) }
      return apiError(fault.status, `Injected failure (HTTP ${fault.status}).`, 'injected_fault', headers)
    }

    const simulator = providerFor(request)
    const context = { signal: request.signal }
    try {
      if (!isChat) {
        const response = await simulator.embeddings(body as unknown as EmbeddingRequest, context)
        complete = true
        if (body.encoding_format !== 'base64') return Response.json(response)
        const data = response.data.map((item) => ({
          ...item,
          embedding: new Uint8Array(new Float32Array(item.embedding as number[]).buffer).toBase64(),
        }))
        return Response.json({ ...response, data })
      }
      if (!streaming) {
        const completion = await simulator.chat(body as unknown as ChatRequest, context)
        complete = true
        return Response.json(completion)
      }
      const chunks = simulator.chatStream(body as unknown as ChatRequest, context)
      // The first chunk comes before the headers, so a simulated failure can still be a status.
      const first = await chunks.next()
      return sseResponse(first, chunks, fault, request.signal, () => {
        complete = true
      })
    } catch (error) {
      if (!(error instanceof UpstreamError)) throw error
      complete = true
      return apiError(error.status, error.message, error.upstreamCode)
    }
  }

  const server = Bun.serve({
    port,
    hostname,
    async fetch(request) {
      const path = new URL(request.url).pathname
      if (path.startsWith('/_sim/')) return control(request, path)
      if (!path.startsWith('/v1/'))
        return apiError(404, `No route for ${request.method} ${path}.`, 'not_found')
      stats.requests++
      lastHeaders = new Headers(request.headers)
      if (path === '/v1/models' && request.method === 'GET')
        return Response.json({
          object: 'list',
          data: modelIds.map((id) => ({ id, object: 'model', created: 0, owned_by: 'tollgate-sim' })),
        })
      if ((path === '/v1/chat/completions' || path === '/v1/embeddings') && request.method === 'POST')
        return model(request, path)
      return apiError(404, `No route for ${request.method} ${path}.`, 'not_found')
    },
  })

  const boundPort = server.port ?? port
  return {
    url: `http://${hostname}:${boundPort}/v1`,
    port: boundPort,
    stats,
    get lastHeaders() {
      return lastHeaders
    },
    addFaults,
    reset,
    stop: () => server.stop(true),
  }
}

/** Relays simulator chunks as SSE, applying the stream faults on the way. */
function sseResponse(
  first: IteratorResult<unknown>,
  chunks: AsyncGenerator<unknown, void, undefined>,
  fault: SimFault | undefined,
  signal: AbortSignal,
  onComplete: () => void,
): Response {
  let pending: IteratorResult<unknown> | undefined = first
  let sent = 0
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (fault?.fail_after_chunks !== undefined && sent >= fault.fail_after_chunks) {
        onComplete()
        // Bun batches writes: without a pause the cut can overtake the chunks (and the headers)
        // still in its buffer, and the client would see a reset instead of a stream cut short.
        await Bun.sleep(CUT_FLUSH_MS)
        // error() without a reason: the cut is intended, and Bun logs errors given as reasons.
        controller.error()
        return
      }
      if (fault?.stall_after_chunks && sent === fault.stall_after_chunks.chunks)
        await sleep(fault.stall_after_chunks.ms, signal)
      try {
        const step = pending ?? (await chunks.next())
        pending = undefined
        if (step.done) {
          onComplete()
          controller.enqueue(encoder.encode(SSE_DONE))
          controller.close()
          return
        }
        controller.enqueue(sseFrameBytes(JSON.stringify(step.value)))
        sent++
      } catch {
        controller.error()
      }
    },
    async cancel() {
      await chunks.return()
    },
  })
  return new Response(body, { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } })
}

if (import.meta.main) {
  const env = process.env
  const number = (name: string): number | undefined => {
    const raw = env[name]
    if (raw === undefined || raw === '') return undefined
    const value = Number(raw)
    if (!Number.isFinite(value) || value < 0)
      throw new Error(`${name}: must be a non-negative number, got "${raw}"`)
    return value
  }
  const sim = await startSimServer({
    port: number('SIM_PORT') ?? 9090,
    hostname: env.SIM_HOST ?? '0.0.0.0',
    ttftMs: number('SIM_TTFT_MS'),
    tokensPerSecond: number('SIM_TOKENS_PER_SECOND'),
    failureRate: number('SIM_FAILURE_RATE'),
    failureStatus: number('SIM_FAILURE_STATUS'),
  })
  console.log(`tollgate simulator listening on ${sim.url}`)
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.on(signal, () => void sim.stop().then(() => process.exit(0)))
}
