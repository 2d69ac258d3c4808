/**
 * What may be cached: the per-model rule from config (when, for how long, in which
 * namespace) and the client's per-request say through `Cache-Control`.
 */
import type { ChatRequestLike } from './wire'

/**
 * `deterministic`: chat requests with `temperature: 0` or a `seed` (embeddings always are);
 * `always`: every request; `never`: the model is not cached.
 */
export type CacheMode = 'deterministic' | 'always' | 'never'

export interface CacheRule {
  mode: CacheMode
  /** How long an entry is served as fresh. */
  ttlMs: number
  /** `user`: one namespace per user, nothing shared across users; `shared`: one per model. */
  namespace: 'user' | 'shared'
}

/** The request directives of `Cache-Control` that the cache honours. */
export interface CacheDirectives {
  /** Neither read nor write the cache. */
  noStore: boolean
  /** Do not answer from the cache, but store the fresh answer. */
  noCache: boolean
  /** Accept only entries at most this many seconds old; null: any fresh entry. */
  maxAgeSeconds: number | null
}

export const noDirectives: CacheDirectives = { noStore: false, noCache: false, maxAgeSeconds: null }

const maxAgePattern = /^max-age\s*=\s*"?(\d{1,10})"?$/

/** Parses a request's Cache-Control (RFC 9111: comma-separated, case-insensitive names). */
export function parseCacheControl(header: string | null | undefined): CacheDirectives {
  if (!header) return noDirectives
  const directives = { ...noDirectives }
  for (const part of header.toLowerCase().split(',')) {
    const directive = part.trim()
    if (directive === 'no-store') directives.noStore = true
    else if (directive === 'no-cache') directives.noCache = true
    else {
      const maxAge = maxAgePattern.exec(directive)
      // A malformed max-age is ignored, as RFC 9111 allows; the smallest of several wins.
      if (maxAge) directives.maxAgeSeconds = Math.min(directives.maxAgeSeconds ?? Infinity, Number(maxAge[1]))
    }
  }
  return directives
}

/** Whether a chat request would give the same answer again: greedy sampling, or a seed. */
export function isDeterministic(request: ChatRequestLike): boolean {
  return request.temperature === 0 || (request.seed !== undefined && request.seed !== null)
}

/** Resolves the rule of each model once: its overrides over the default of its kind. */
export class Policies {
  private readonly resolved = new Map<string, CacheRule>()

  constructor(
    private readonly defaults: { response: CacheRule; embedding: CacheRule },
    private readonly models: Record<string, Partial<CacheRule>>,
  ) {}

  rule(kind: 'response' | 'embedding', model: string): CacheRule {
    const id = `${kind}\n${model}`
    let rule = this.resolved.get(id)
    if (!rule) {
      rule = withOverrides(this.defaults[kind], this.models[model])
      this.resolved.set(id, rule)
    }
    return rule
  }
}

/** The rule with the overrides that are set (an undefined field keeps the default). */
export function withOverrides(rule: CacheRule, overrides: Partial<CacheRule> | undefined): CacheRule {
  if (!overrides) return rule
  const set = Object.entries(overrides).filter(([, value]) => value !== undefined)
  return { ...rule, ...Object.fromEntries(set) }
}
