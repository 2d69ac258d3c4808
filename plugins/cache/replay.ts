/**
 * A stored completion replayed as the Server-Sent Events a `stream: true` request expects:
 * per choice a role chunk, the content, the tool calls and a finish chunk; then the usage
 * chunk when the client asked for it, and `data: [DONE]`. The whole answer is there already,
 * so each choice's text goes out in one content chunk: nothing is gained by pacing it.
 * The frames are built as one string, written in one go.
 */
import type { Chunk, Completion } from './wire'

export interface ReplayOptions {
  /** `stream_options.include_usage`: end with a chunk that carries the usage. */
  includeUsage: boolean
}

export function replayFrames(completion: Completion, { includeUsage }: ReplayOptions): string {
  const { choices, usage, object: _object, ...head } = completion
  const frame = (chunkChoices: Chunk['choices'], extra: Partial<Chunk> = {}) =>
    `data: ${JSON.stringify({ ...head, object: 'chat.completion.chunk', choices: chunkChoices, ...extra })}\n\n`
  let out = ''
  for (const choice of choices) {
    const { index, message, finish_reason, logprobs } = choice
    out += frame([{ index, delta: { role: message.role, content: '' }, finish_reason: null, logprobs: null }])
    if (message.content)
      out += frame([
        { index, delta: { content: message.content }, finish_reason: null, logprobs: logprobs ?? null },
      ])
    if (message.refusal) out += frame([{ index, delta: { refusal: message.refusal }, finish_reason: null }])
    message.tool_calls?.forEach((call, position) => {
      out += frame([{ index, delta: { tool_calls: [{ index: position, ...call }] }, finish_reason: null }])
    })
    out += frame([{ index, delta: {}, finish_reason, logprobs: null }])
  }
  if (includeUsage && usage) out += frame([], { usage })
  return `${out}data: [DONE]\n\n`
}
