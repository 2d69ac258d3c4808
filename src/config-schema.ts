/**
 * The config file's shape (snake_case keys, as DESIGN.md's "Contracts" gives it). Every
 * section is optional; `src/config.ts` fills in the defaults and the environment.
 */
import { type Static, Type as T, type TSchema } from '@sinclair/typebox'

const Nullable = <S extends TSchema>(schema: S) => T.Union([schema, T.Null()])
const PositiveInt = T.Integer({ minimum: 1 })
const NonNegative = T.Number({ minimum: 0 })

export const ProviderSchema = T.Union([
  T.Object(
    {
      type: T.Literal('openai'),
      base_url: T.String({ pattern: '^https?://' }),
      api_key_env: T.Optional(T.String({ minLength: 1 })),
      timeout_ms: T.Optional(PositiveInt),
      headers: T.Optional(T.Record(T.String(), T.String())),
    },
    { additionalProperties: false },
  ),
  T.Object(
    {
      type: T.Literal('simulator'),
      ttft_ms: T.Optional(NonNegative),
      tokens_per_second: T.Optional(NonNegative),
      failure_rate: T.Optional(T.Number({ minimum: 0, maximum: 1 })),
      failure_status: T.Optional(T.Integer({ minimum: 400, maximum: 599 })),
      max_tokens: T.Optional(PositiveInt),
    },
    { additionalProperties: false },
  ),
])

export const PricingSchema = T.Object(
  { input: NonNegative, output: NonNegative, cached_input: T.Optional(NonNegative) },
  { additionalProperties: false },
)

export const ModelSchema = T.Object(
  {
    provider: T.String({ minLength: 1 }),
    upstream_model: T.Optional(T.String({ minLength: 1 })),
    kind: T.Optional(T.Union([T.Literal('chat'), T.Literal('embedding')])),
    pricing: T.Optional(PricingSchema),
    free: T.Optional(T.Boolean()),
    fallbacks: T.Optional(T.Array(T.String({ minLength: 1 }))),
  },
  { additionalProperties: false },
)

export const TierSchema = T.Object(
  {
    requests_per_minute: T.Optional(Nullable(PositiveInt)),
    requests_per_hour: T.Optional(Nullable(PositiveInt)),
    requests_per_day: T.Optional(Nullable(PositiveInt)),
    tokens_per_day: T.Optional(Nullable(PositiveInt)),
    cost_per_day_usd: T.Optional(Nullable(NonNegative)),
    concurrent: T.Optional(Nullable(PositiveInt)),
    max_messages: T.Optional(Nullable(PositiveInt)),
    max_prompt_chars: T.Optional(Nullable(PositiveInt)),
  },
  { additionalProperties: false },
)

export const GlobalSchema = T.Object(
  {
    concurrent: T.Optional(Nullable(PositiveInt)),
    requests_per_hour: T.Optional(Nullable(PositiveInt)),
    cost_per_day_usd: T.Optional(Nullable(NonNegative)),
  },
  { additionalProperties: false },
)

/** A cache rule: for the defaults of chat or embedding models, or for one model. */
export const CacheRuleSchema = T.Object(
  {
    mode: T.Optional(T.Union([T.Literal('deterministic'), T.Literal('always'), T.Literal('never')])),
    ttl_seconds: T.Optional(PositiveInt),
    namespace: T.Optional(T.Union([T.Literal('user'), T.Literal('shared')])),
  },
  { additionalProperties: false },
)

export const CacheSchema = T.Object(
  {
    enabled: T.Optional(T.Boolean()),
    max_entry_bytes: T.Optional(PositiveInt),
    memory_max_bytes: T.Optional(PositiveInt),
    stale_seconds: T.Optional(T.Integer({ minimum: 0 })),
    coalesce: T.Optional(T.Boolean()),
    responses: T.Optional(CacheRuleSchema),
    embeddings: T.Optional(CacheRuleSchema),
    models: T.Optional(T.Record(T.String({ minLength: 1 }), CacheRuleSchema)),
  },
  { additionalProperties: false },
)

/** Request limits every route shares; prompt limits are per tier, in TierSchema. */
export const LimitsSchema = T.Object(
  {
    max_json_depth: T.Optional(T.Integer({ minimum: 2, maximum: 1000 })),
    max_json_array_length: T.Optional(PositiveInt),
    max_header_bytes: T.Optional(T.Integer({ minimum: 1024 })),
  },
  { additionalProperties: false },
)

/** Breaker, retry and timeout settings: the breaker section's defaults, and its per-provider and per-model overrides. */
const ResilienceFields = {
  window_ms: T.Optional(PositiveInt),
  failure_threshold: T.Optional(T.Integer({ minimum: 0 })),
  failure_rate: T.Optional(T.Number({ minimum: 0, maximum: 1 })),
  minimum_calls: T.Optional(PositiveInt),
  cooldown_ms: T.Optional(PositiveInt),
  max_cooldown_ms: T.Optional(PositiveInt),
  half_open_probes: T.Optional(PositiveInt),
  success_threshold: T.Optional(PositiveInt),
  timeouts: T.Optional(
    T.Object(
      {
        connect_ms: T.Optional(T.Integer({ minimum: 0 })),
        ttft_ms: T.Optional(T.Integer({ minimum: 0 })),
        idle_ms: T.Optional(T.Integer({ minimum: 0 })),
        total_ms: T.Optional(T.Integer({ minimum: 0 })),
      },
      { additionalProperties: false },
    ),
  ),
  retries: T.Optional(
    T.Object(
      {
        max_retries: T.Optional(T.Integer({ minimum: 0, maximum: 10 })),
        backoff_base_ms: T.Optional(T.Integer({ minimum: 0 })),
        backoff_cap_ms: T.Optional(T.Integer({ minimum: 0 })),
        retry_after_cap_ms: T.Optional(T.Integer({ minimum: 0 })),
      },
      { additionalProperties: false },
    ),
  ),
}

export const ResilienceSchema = T.Object(ResilienceFields, { additionalProperties: false })

export const BreakerSchema = T.Object(
  {
    ...ResilienceFields,
    enabled: T.Optional(T.Boolean()),
    sync_interval_ms: T.Optional(T.Integer({ minimum: 50, maximum: 1000 })),
    stale_cache: T.Optional(T.Boolean()),
    providers: T.Optional(T.Record(T.String({ minLength: 1 }), ResilienceSchema)),
    models: T.Optional(T.Record(T.String({ minLength: 1 }), ResilienceSchema)),
  },
  { additionalProperties: false },
)

/** Metrics, request logs, tracing and the alert thresholds the gateway exports. */
export const ObservabilitySchema = T.Object(
  {
    metrics: T.Optional(
      T.Object(
        {
          bearer_token_env: T.Optional(Nullable(T.String({ minLength: 1 }))),
          process_metrics: T.Optional(T.Boolean()),
          dependency_timeout_ms: T.Optional(PositiveInt),
        },
        { additionalProperties: false },
      ),
    ),
    logs: T.Optional(
      T.Object(
        {
          requests: T.Optional(T.Boolean()),
          request_bodies: T.Optional(T.Boolean()),
          quiet_paths: T.Optional(T.Array(T.String({ pattern: '^/' }))),
        },
        { additionalProperties: false },
      ),
    ),
    tracing: T.Optional(
      T.Object(
        {
          service_name: T.Optional(T.String({ minLength: 1 })),
          sample_ratio: T.Optional(T.Number({ minimum: 0, maximum: 1 })),
        },
        { additionalProperties: false },
      ),
    ),
    alerts: T.Optional(
      T.Object({ daily_cost_usd: T.Optional(Nullable(NonNegative)) }, { additionalProperties: false }),
    ),
  },
  { additionalProperties: false },
)

export const ConfigFileSchema = T.Object(
  {
    server: T.Optional(
      T.Object(
        {
          port: T.Optional(T.Integer({ minimum: 0, maximum: 65535 })),
          host: T.Optional(T.String({ minLength: 1 })),
          body_limit_bytes: T.Optional(PositiveInt),
          shutdown_grace_ms: T.Optional(T.Integer({ minimum: 0 })),
          drain_delay_ms: T.Optional(T.Integer({ minimum: 0 })),
        },
        { additionalProperties: false },
      ),
    ),
    redis: T.Optional(
      T.Object({ startup_wait_ms: T.Optional(T.Integer({ minimum: 0 })) }, { additionalProperties: false }),
    ),
    auth: T.Optional(
      T.Object(
        {
          key_cache_ttl_ms: T.Optional(T.Integer({ minimum: 0 })),
          lookup_timeout_ms: T.Optional(PositiveInt),
          stale_while_unavailable_ms: T.Optional(T.Integer({ minimum: 0 })),
          failures_per_minute: T.Optional(Nullable(PositiveInt)),
          trusted_proxy_hops: T.Optional(T.Integer({ minimum: 0, maximum: 10 })),
        },
        { additionalProperties: false },
      ),
    ),
    limits: T.Optional(LimitsSchema),
    providers: T.Optional(T.Record(T.String({ minLength: 1 }), ProviderSchema)),
    models: T.Optional(T.Record(T.String({ minLength: 1 }), ModelSchema)),
    tiers: T.Optional(T.Record(T.String({ minLength: 1 }), TierSchema)),
    global: T.Optional(GlobalSchema),
    observability: T.Optional(ObservabilitySchema),
    quota: T.Optional(
      T.Object(
        {
          enabled: T.Optional(T.Boolean()),
          fallback: T.Optional(T.Union([T.Literal('local'), T.Literal('open'), T.Literal('closed')])),
          route_weights: T.Optional(T.Record(T.String({ pattern: '^/' }), PositiveInt)),
          default_max_tokens: T.Optional(PositiveInt),
          lease_ttl_ms: T.Optional(PositiveInt),
          refund_requests_on_error: T.Optional(T.Boolean()),
        },
        { additionalProperties: false },
      ),
    ),
    ledger: T.Optional(
      T.Object(
        {
          enabled: T.Optional(T.Boolean()),
          flush_interval_ms: T.Optional(PositiveInt),
          batch_size: T.Optional(T.Integer({ minimum: 1, maximum: 10_000 })),
          max_backlog: T.Optional(PositiveInt),
          overflow: T.Optional(T.Union([T.Literal('reject'), T.Literal('drop')])),
          retry_initial_ms: T.Optional(PositiveInt),
          retry_max_ms: T.Optional(PositiveInt),
          shutdown_timeout_ms: T.Optional(T.Integer({ minimum: 0 })),
          spill_dir: T.Optional(Nullable(T.String({ minLength: 1 }))),
          budget_refresh_ms: T.Optional(PositiveInt),
        },
        { additionalProperties: false },
      ),
    ),
    cache: T.Optional(CacheSchema),
    breaker: T.Optional(BreakerSchema),
    streams: T.Optional(T.Object({ heartbeat_ms: T.Optional(PositiveInt) }, { additionalProperties: false })),
  },
  { additionalProperties: false },
)

export type ConfigFile = Static<typeof ConfigFileSchema>
export type ProviderConfig = Static<typeof ProviderSchema>
export type ModelFileConfig = Static<typeof ModelSchema>
export type Pricing = Static<typeof PricingSchema>
export type TierLimits = Required<Static<typeof TierSchema>>
export type GlobalLimits = Required<Static<typeof GlobalSchema>>
export type CacheRuleFile = Static<typeof CacheRuleSchema>
export type ResilienceFile = Static<typeof ResilienceSchema>
