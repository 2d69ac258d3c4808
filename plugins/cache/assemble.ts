/**
 * Turns a relayed stream back into the `chat.completion` it spelled out, so a streamed miss
 * can be stored and later answered as JSON or replayed. The relay hands over each chunk
 * object it already parsed; this keeps references to the text pieces and joins them once,
 * at settlement, off the response's critical path. Nothing is serialised per chunk.
 *
 * Tool calls are merged by their index (id, type and name from the chunk that carries
 * them, argument fragments concatenated), as the OpenAI stream format defines them.
 */
import type { Chunk, Completion, CompletionChoice, ToolCall, WireUsage } from './wire'

interface ToolCallParts {
  fields: ToolCall
  name: string[]
  arguments: string[]
}

interface ChoiceParts {
  role: string
  content: string[]
  refusal: string[]
  toolCalls: Map<number, ToolCallParts>
  finishReason: string | null
  logprobs: { content: unknown[]; refusal: unknown[] } | null
}

export class StreamAssembler {
  private readonly choices = new Map<number, ChoiceParts>()
  private head: Pick<Chunk, 'id' | 'created' | 'model'> & Record<string, unknown> = {
    id: '',
    created: 0,
    model: '',
  }
  private usage: WireUsage | null = null
  private chars = 0
  /** Set once the text passed the bound: the answer will not be stored, so stop holding it. */
  private overflowed = false

  /** `maxChars` bounds what is held; a longer answer could not be stored anyway. */
  constructor(private readonly maxChars: number) {}

  get complete(): boolean {
    return !this.overflowed
  }

  add(chunk: Chunk): void {
    if (this.overflowed) return
    if (this.head.id === '') {
      // `obfuscation` is per-chunk padding some upstreams add; it means nothing in a completion.
      const { choices: _choices, usage: _usage, object: _object, obfuscation: _padding, ...head } = chunk
      this.head = head
    }
    if (chunk.usage) this.usage = chunk.usage
    for (const choice of chunk.choices) {
      const parts = this.choice(choice.index)
      const delta = choice.delta
      if (delta.role) parts.role = delta.role
      if (delta.content) this.push(parts.content, delta.content)
      if (delta.refusal) this.push(parts.refusal, delta.refusal)
      if (delta.tool_calls) for (const call of delta.tool_calls) this.addToolCall(parts, call)
      if (choice.finish_reason) parts.finishReason = choice.finish_reason
      const logprobs = choice.logprobs as { content?: unknown[] | null; refusal?: unknown[] | null } | null
      if (logprobs) {
        parts.logprobs ??= { content: [], refusal: [] }
        if (logprobs.content) parts.logprobs.content.push(...logprobs.content)
        if (logprobs.refusal) parts.logprobs.refusal.push(...logprobs.refusal)
      }
    }
    if (this.chars > this.maxChars) {
      this.overflowed = true
      this.choices.clear()
    }
  }

  /** The assembled completion; `usage` is the stream's own, else the one the gateway accounted. */
  result(fallbackUsage: WireUsage): Completion {
    const choices: CompletionChoice[] = [...this.choices.entries()]
      .sort(([a], [b]) => a - b)
      .map(([index, parts]) => {
        const toolCalls = [...parts.toolCalls.entries()]
          .sort(([a], [b]) => a - b)
          .map(([, call]) => ({
            ...call.fields,
            function: {
              ...call.fields.function,
              name: call.name.join(''),
              arguments: call.arguments.join(''),
            },
          }))
        const message: CompletionChoice['message'] = {
          role: parts.role,
          // OpenAI answers null content next to tool calls and an empty string for an empty answer.
          content: parts.content.length === 0 && toolCalls.length > 0 ? null : parts.content.join(''),
          ...(parts.refusal.length > 0 ? { refusal: parts.refusal.join('') } : {}),
          ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
        }
        return { index, message, finish_reason: parts.finishReason, logprobs: parts.logprobs }
      })
    return { ...this.head, object: 'chat.completion', choices, usage: this.usage ?? fallbackUsage }
  }

  private push(into: string[], text: string): void {
    into.push(text)
    this.chars += text.length
  }

  private choice(index: number): ChoiceParts {
    let parts = this.choices.get(index)
    if (!parts) {
      parts = {
        role: 'assistant',
        content: [],
        refusal: [],
        toolCalls: new Map(),
        finishReason: null,
        logprobs: null,
      }
      this.choices.set(index, parts)
    }
    return parts
  }

  private addToolCall(parts: ChoiceParts, call: ToolCall & { index: number }): void {
    let merged = parts.toolCalls.get(call.index)
    if (!merged) {
      merged = { fields: {}, name: [], arguments: [] }
      parts.toolCalls.set(call.index, merged)
    }
    const { index: _index, function: fn, ...fields } = call
    Object.assign(merged.fields, fields)
    if (fn) {
      const { name, arguments: args, ...rest } = fn
      merged.fields.function = { ...merged.fields.function, ...rest }
      if (name) this.push(merged.name, name)
      if (args) this.push(merged.arguments, args)
    }
  }
}
