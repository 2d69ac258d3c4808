/**
 * The OpenAI chat shapes the cache reads and writes, typed structurally and only as far as
 * the cache needs them. The plugin never imports the application's provider types: any
 * object of the OpenAI wire format fits, and unknown fields travel through untouched.
 */

export interface WireUsage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
  prompt_tokens_details?: { cached_tokens?: number; [field: string]: unknown } | null
  [field: string]: unknown
}

export interface ToolCall {
  id?: string
  type?: string
  function?: { name?: string; arguments?: string; [field: string]: unknown }
  [field: string]: unknown
}

export interface CompletionMessage {
  role: string
  content: string | null
  refusal?: string | null
  tool_calls?: ToolCall[]
  [field: string]: unknown
}

export interface CompletionChoice {
  index: number
  message: CompletionMessage
  finish_reason: string | null
  logprobs?: unknown
  [field: string]: unknown
}

/** A `chat.completion`: what is stored, and what a JSON hit answers. */
export interface Completion {
  id: string
  object: 'chat.completion'
  created: number
  model: string
  choices: CompletionChoice[]
  usage?: WireUsage | null
  [field: string]: unknown
}

export interface ChunkDelta {
  role?: string
  content?: string | null
  refusal?: string | null
  tool_calls?: Array<ToolCall & { index: number }>
  [field: string]: unknown
}

/** A `chat.completion.chunk`, as relayed to a streaming client and replayed from a hit. */
export interface Chunk {
  id: string
  object: 'chat.completion.chunk'
  created: number
  model: string
  choices: Array<{
    index: number
    delta: ChunkDelta
    finish_reason: string | null
    logprobs?: unknown
    [field: string]: unknown
  }>
  usage?: WireUsage | null
  [field: string]: unknown
}

/** The request fields the cache reads; the key covers every field of the body. */
export interface ChatRequestLike {
  model: string
  temperature?: number | null
  seed?: number | null
  [field: string]: unknown
}
