/**
 * Money is integer nano-USD (bigint) end to end; floats never hold it. Prices arrive as
 * USD per 1M tokens (config) and are converted once, at startup, to nano-USD per 1M tokens.
 * A request's cost is the exact sum over its token classes, divided by 1M once and rounded
 * half up, so the ledger can be recomputed independently to the nano-dollar.
 */
import type { Usage } from './exchange'

const nanoPerUsd = 1_000_000_000n
const tokensPerPrice = 1_000_000n

export interface Price {
  /** nano-USD per 1M prompt tokens not served from the provider's prompt cache. */
  input: bigint
  /** nano-USD per 1M completion tokens. */
  output: bigint
  /** nano-USD per 1M prompt tokens served from the provider's prompt cache. */
  cachedInput: bigint
}

/** USD amounts as written in config (at most 9 decimals) to exact nano-USD. */
export function usdToNano(usd: number): bigint {
  const [whole, fraction = ''] = usd.toFixed(9).split('.')
  return BigInt(whole!) * nanoPerUsd + BigInt(fraction.padEnd(9, '0').slice(0, 9))
}

/** Converts a config price (USD per 1M tokens); cached input defaults to the input price. */
export function priceFromUsdPerMillion(pricing: {
  input: number
  output: number
  cached_input?: number
}): Price {
  const input = usdToNano(pricing.input)
  return {
    input,
    output: usdToNano(pricing.output),
    cachedInput: pricing.cached_input === undefined ? input : usdToNano(pricing.cached_input),
  }
}

export const freePrice: Price = { input: 0n, output: 0n, cachedInput: 0n }

export function costOf(price: Price, usage: Usage): bigint {
  const cached = BigInt(Math.min(usage.cachedTokens, usage.promptTokens))
  const uncached = BigInt(usage.promptTokens) - cached
  const total =
    uncached * price.input + cached * price.cachedInput + BigInt(usage.completionTokens) * price.output
  return (total + tokensPerPrice / 2n) / tokensPerPrice
}

/** `"0.001250"`: six decimals, as the wire contract gives amounts (rounded half up). */
export function formatUsd(nano: bigint): string {
  const negative = nano < 0n
  const micro = ((negative ? -nano : nano) + 500n) / 1000n
  const text = `${micro / 1_000_000n}.${(micro % 1_000_000n).toString().padStart(6, '0')}`
  return negative ? `-${text}` : text
}
