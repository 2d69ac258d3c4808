/**
 * Per-tier limits on the size of a prompt: how many chat messages a request may carry and
 * how many characters of prompt text in all. The body limit caps bytes for everyone; these
 * let a small tier be held to small prompts. They need the principal, so the model routes
 * check them after authentication and validation, before quota or cache are touched.
 */
import { ApiError } from './errors'
import type { Principal } from './exchange'

/** Field names as in the config file's `tiers:` entries and keys' overrides; null = unlimited. */
export interface PromptLimits {
  max_messages: number | null
  max_prompt_chars: number | null
}

/** The parts of a chat or embeddings body that make up its prompt. */
export interface PromptBody {
  messages?: ReadonlyArray<{ content?: unknown }>
  input?: unknown
}

/** A token id in an embeddings input counts as this many characters: the admission estimate's ratio. */
const charsPerToken = 4

function textOfContent(content: unknown): number {
  if (typeof content === 'string') return content.length
  if (!Array.isArray(content)) return 0
  let characters = 0
  for (const part of content as Array<{ text?: unknown } | null>) {
    if (typeof part?.text === 'string') characters += part.text.length
  }
  return characters
}

/** Characters of prompt text in chat messages: string content and the `text` of content parts. */
export function messageCharacters(messages: NonNullable<PromptBody['messages']>): number {
  let characters = 0
  for (const message of messages) characters += textOfContent(message.content)
  return characters
}

function charsOfInput(input: unknown): number {
  if (typeof input === 'string') return input.length
  if (!Array.isArray(input)) return 0
  let characters = 0
  for (const item of input as unknown[]) {
    if (typeof item === 'string') characters += item.length
    else if (Array.isArray(item)) characters += item.length * charsPerToken
    else characters += charsPerToken
  }
  return characters
}

/**
 * Throws the 400 naming the field (`messages` or `input`) when a body is over a limit.
 * Prompt characters are the text of every message (string content and the `text` of
 * content parts), or of the embeddings input; a token id in an input counts as 4.
 */
export function checkPromptLimits(body: PromptBody, limits: PromptLimits): void {
  const { max_messages: maxMessages, max_prompt_chars: maxChars } = limits
  const param = body.messages ? 'messages' : 'input'
  if (body.messages && maxMessages !== null && body.messages.length > maxMessages)
    throw new ApiError({
      status: 400,
      message: `Too many messages: ${body.messages.length}; your tier allows at most ${maxMessages} per request.`,
      code: 'too_many_messages',
      param,
    })
  if (maxChars === null) return
  const characters = body.messages ? messageCharacters(body.messages) : charsOfInput(body.input)
  if (characters > maxChars)
    throw new ApiError({
      status: 400,
      message: `Prompt too long: ${characters} characters; your tier allows at most ${maxChars} per request.`,
      code: 'prompt_too_long',
      param,
    })
}

const unlimited: PromptLimits = { max_messages: null, max_prompt_chars: null }

/** A key's override of one limit: a positive number or null (unlimited); anything else is ignored. */
function effective(overrides: Record<string, unknown>, field: keyof PromptLimits, tierValue: number | null) {
  const value = overrides[field]
  return value === null || (typeof value === 'number' && value > 0) ? value : tierValue
}

/**
 * A principal's effective limits: its tier's, with the key's own overrides on top (the same
 * merge the quota plugin makes). A tier missing from `tiers` is unlimited here; the quota
 * plugin refuses such keys anyway.
 */
export function promptLimitsOf(
  principal: Principal,
  tiers: Readonly<Record<string, PromptLimits>>,
): PromptLimits {
  const tier = tiers[principal.tier] ?? unlimited
  return {
    max_messages: effective(principal.overrides, 'max_messages', tier.max_messages ?? null),
    max_prompt_chars: effective(principal.overrides, 'max_prompt_chars', tier.max_prompt_chars ?? null),
  }
}
