/**
 * Model name (what the client sends) -> model config + the provider that serves it. Built once
 * at startup from config, so a request resolves its model with a map lookup and an unknown
 * model is a precise 404 before any upstream is touched.
 */
import { ApiError } from '../../plugins/exchange'
import type { ModelConfig, ProviderConfig } from '../config'
import { OpenAIProvider } from './openai'
import type { Provider } from './provider'
import { SimulatorProvider } from './simulator'

export interface ResolvedModel {
  model: ModelConfig
  provider: Provider
}

/** Long enough for any real model id; longer names are cut so an error echoes no payload. */
const MAX_ECHOED_NAME = 256

const shown = (name: string) =>
  name.length > MAX_ECHOED_NAME ? `${name.slice(0, MAX_ECHOED_NAME)}...` : name

export class ModelRouter {
  private readonly routes = new Map<string, ResolvedModel>()

  constructor(models: Record<string, ModelConfig>, providers: Record<string, Provider>) {
    for (const model of Object.values(models)) {
      const provider = providers[model.provider]
      if (!provider) throw new Error(`model ${model.name}: no provider named "${model.provider}"`)
      this.routes.set(model.name, { model, provider })
    }
  }

  /**
   * The model and its provider. `kind` names what the caller's endpoint serves, so a chat
   * request for an embedding model fails here rather than at the upstream.
   */
  resolve(name: string, kind?: ModelConfig['kind']): ResolvedModel {
    const route = this.routes.get(name)
    if (!route)
      throw new ApiError({
        status: 404,
        type: 'invalid_request_error',
        code: 'model_not_found',
        param: 'model',
        message: `The model '${shown(name)}' does not exist.`,
      })
    if (kind && route.model.kind !== kind)
      throw new ApiError({
        status: 400,
        type: 'invalid_request_error',
        code: 'model_not_supported',
        param: 'model',
        message: `The model '${shown(name)}' is ${route.model.kind === 'chat' ? 'a chat' : 'an embedding'} model and cannot serve this endpoint.`,
      })
    return route
  }

  has(name: string): boolean {
    return this.routes.has(name)
  }

  /** Every configured model, in config order. */
  list(): ModelConfig[] {
    return Array.from(this.routes.values(), (route) => route.model)
  }
}

/** One provider instance per configured provider; instances hold pooled connections, so share them. */
export function createProviders(
  config: Record<string, ProviderConfig & { apiKey?: string }>,
): Record<string, Provider> {
  const providers: Record<string, Provider> = {}
  for (const [name, provider] of Object.entries(config)) {
    providers[name] =
      provider.type === 'openai'
        ? new OpenAIProvider({
            name,
            baseUrl: provider.base_url,
            apiKey: provider.apiKey,
            headers: provider.headers,
            timeoutMs: provider.timeout_ms,
          })
        : new SimulatorProvider({
            name,
            ttftMs: provider.ttft_ms,
            tokensPerSecond: provider.tokens_per_second,
            failureRate: provider.failure_rate,
            failureStatus: provider.failure_status,
            maxTokens: provider.max_tokens,
          })
  }
  return providers
}
