/**
 * Usage bookkeeping shared by the model routes: the cheap admission estimate and the
 * conversion of an upstream `usage` object onto the Exchange.
 */
import { type Exchange, messageCharacters } from '../../plugins/exchange'
import type { ChatRequest, WireUsage } from '../upstream/provider'

/**
 * Characters / 4 is the usual cheap estimate; reconciliation replaces it with actual usage.
 * The characters are counted as the prompt limits count them (one definition, in the exchange).
 */
export function estimatePromptTokens(request: { messages: ChatRequest['messages'] }): number {
  return Math.ceil(messageCharacters(request.messages) / 4)
}

/** Embedding input: strings by characters / 4, token arrays by their length. */
export function estimateInputTokens(input: string | string[] | number[] | number[][]): number {
  if (typeof input === 'string') return Math.ceil(input.length / 4)
  let tokens = 0
  for (const item of input as Array<string | number | number[]>) {
    if (typeof item === 'string') tokens += Math.ceil(item.length / 4)
    else if (Array.isArray(item)) tokens += item.length
    else tokens++
  }
  return tokens
}

export function recordUsage(exchange: Exchange, usage: WireUsage | null | undefined): void {
  if (!usage) return
  exchange.usage = {
    promptTokens: usage.prompt_tokens ?? 0,
    completionTokens: usage.completion_tokens ?? 0,
    cachedTokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
  }
}
