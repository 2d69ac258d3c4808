/**
 * The soak's client: one request of the mixed load (JSON, stream, cache hit, quota user)
 * against a gateway, with a client-side deadline, recorded with everything the checks need
 * afterwards. Every request carries its own `x-request-id` (a fresh UUID), so the ledger row of
 * an answered request is found by `usage_events.client_request_id`, and a request whose answer
 * never came (a killed instance, a refused connection) is still known by id.
 */

export type Kind = 'json' | 'stream' | 'cached' | 'quota'

export interface Sent {
  i: number
  kind: Kind
  /** 'a' or 'b'; `generation` counts restarts of that instance (b2 after the SIGKILL). */
  gateway: 'a' | 'b'
  generation: number
  id: string
  /** Milliseconds since the run started. */
  sentAt: number
  doneAt: number
  /** 0: no HTTP answer (refused, reset, timed out before headers). */
  status: number
  /** The OpenAI error envelope's code (JSON body or an SSE error event), if any. */
  code: string | null
  /** The answer's x-request-id was ours: the gateway took the request as this id. */
  echoed: boolean
  /** `complete`: the whole body arrived; `cut`: headers came, then the body broke. */
  outcome: 'complete' | 'cut' | 'network' | 'timeout'
}

export const MODEL = 'soak-1'
export const DEADLINE_MS = 30_000

/** Five fixed prompts at temperature 0: after the first answer of each, the rest are cache hits. */
const cachedPrompts = ['one', 'two', 'three', 'four', 'five'].map((word) => `Say ${word} in eight words.`)

export function bodyFor(kind: Kind, i: number): string {
  if (kind === 'cached')
    return JSON.stringify({
      model: MODEL,
      messages: [{ role: 'user', content: cachedPrompts[i % cachedPrompts.length] }],
      max_tokens: 8,
      temperature: 0,
    })
  return JSON.stringify({
    model: MODEL,
    // A unique prompt, no temperature: never cacheable, so every one goes upstream.
    messages: [{ role: 'user', content: `Count to ten, request ${i}.` }],
    max_tokens: 16,
    ...(kind === 'stream' ? { stream: true } : {}),
  })
}

/** The error code of a JSON error body, or of the first SSE `error` frame of a stream. */
export function errorCode(text: string): string | null {
  const match = /"error"\s*:\s*\{[^}]*?"code"\s*:\s*"([^"]+)"/.exec(text)
  return match ? match[1]! : null
}

export interface Attempt {
  url: string
  key: string
  kind: Kind
  i: number
  gateway: 'a' | 'b'
  generation: number
  started: number
}

/** Sends one request and reads its whole answer within DEADLINE_MS; never throws. */
export async function send({ url, key, kind, i, gateway, generation, started }: Attempt): Promise<Sent> {
  const id = crypto.randomUUID()
  const record: Sent = {
    i,
    kind,
    gateway,
    generation,
    id,
    sentAt: performance.now() - started,
    doneAt: 0,
    status: 0,
    code: null,
    echoed: false,
    outcome: 'network',
  }
  const signal = AbortSignal.timeout(DEADLINE_MS)
  try {
    const response = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-request-id': id },
      body: bodyFor(kind, i),
      signal,
    })
    record.status = response.status
    record.echoed = response.headers.get('x-request-id') === id
    record.outcome = 'cut'
    const text = await response.text()
    record.code = errorCode(text)
    record.outcome = 'complete'
  } catch (error) {
    // A deadline hit shows as TimeoutError (or AbortError from the body read); count both.
    const name = error instanceof Error ? error.name : ''
    if (name === 'TimeoutError' || name === 'AbortError' || signal.aborted) record.outcome = 'timeout'
  }
  record.doneAt = performance.now() - started
  return record
}

/** The kind of request i: 40% JSON, 25% streams, 25% cache hits, 10% the small-tier user. */
export function kindOf(i: number): Kind {
  const slot = i % 20
  if (slot < 8) return 'json'
  if (slot < 13) return 'stream'
  if (slot < 18) return 'cached'
  return 'quota'
}
