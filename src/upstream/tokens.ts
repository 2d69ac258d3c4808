/**
 * The simulator's tokenizer. Real tokenizers are large and model-specific; the simulator
 * only needs one that is cheap, deterministic and easy to check by eye, so that its usage
 * numbers can be exact: a token is a whitespace-separated word.
 */
import type { ChatMessage, EmbeddingRequest } from './provider'

/**
 * Tokens each chat message costs beyond the words of its content, standing for the role and
 * the framing a real chat template adds (OpenAI's models charge 3 to 4 per message).
 */
export const MESSAGE_OVERHEAD_TOKENS = 4

const whitespace = /\s+/

export function countTokens(text: string): number {
  let count = 0
  for (const word of text.split(whitespace)) if (word !== '') count++
  return count
}

/** The text of a message's content: a string, or the `text` parts of a content array. */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content
  if (!Array.isArray(content)) return ''
  const texts: string[] = []
  for (const part of content) {
    if (part !== null && typeof part === 'object' && 'text' in part && typeof part.text === 'string')
      texts.push(part.text)
  }
  return texts.join(' ')
}

export function countPromptTokens(messages: readonly ChatMessage[]): number {
  let total = 0
  for (const message of messages) total += countTokens(contentText(message.content)) + MESSAGE_OVERHEAD_TOKENS
  return total
}

/**
 * An embedding request's inputs one by one, each with its token count. Inputs given as token
 * ids (arrays of numbers) count one token per id and are keyed by their ids.
 */
export function embeddingInputs(input: EmbeddingRequest['input']): Array<{ key: string; tokens: number }> {
  if (typeof input === 'string') return [{ key: input, tokens: countTokens(input) }]
  if (input.length === 0) return []
  if (input.every((item) => typeof item === 'number')) return [{ key: input.join(','), tokens: input.length }]
  return input.map((item) =>
    typeof item === 'string'
      ? { key: item, tokens: countTokens(item) }
      : Array.isArray(item)
        ? { key: item.join(','), tokens: item.length }
        : { key: String(item), tokens: 1 },
  )
}
