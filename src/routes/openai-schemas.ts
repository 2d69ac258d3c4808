/**
 * TypeBox schemas of the OpenAI surface. Requests accept every field the OpenAI API accepts
 * and pass unknown ones through (`additionalProperties: true`), so new upstream features
 * work without a gateway release; the fields the gateway reads are checked precisely.
 */
import { t } from 'elysia'
import { OpenAIErrorSchema } from '../../plugins/exchange'

const open = { additionalProperties: true }

const ContentPart = t.Object({ type: t.String({ minLength: 1 }) }, open)

export const ChatMessage = t.Object(
  {
    role: t.Union([
      t.Literal('system'),
      t.Literal('developer'),
      t.Literal('user'),
      t.Literal('assistant'),
      t.Literal('tool'),
      t.Literal('function'),
    ]),
    content: t.Optional(t.Union([t.String(), t.Array(ContentPart), t.Null()])),
    name: t.Optional(t.String()),
    tool_call_id: t.Optional(t.String()),
    tool_calls: t.Optional(t.Array(t.Object({}, open))),
  },
  open,
)

const Nullable = <S extends Parameters<typeof t.Union>[0][number]>(schema: S) => t.Union([schema, t.Null()])

export const ChatCompletionRequest = t.Object(
  {
    model: t.String({ minLength: 1, maxLength: 256 }),
    messages: t.Array(ChatMessage, { minItems: 1 }),
    stream: t.Optional(Nullable(t.Boolean())),
    stream_options: t.Optional(Nullable(t.Object({ include_usage: t.Optional(t.Boolean()) }, open))),
    max_tokens: t.Optional(Nullable(t.Integer({ minimum: 1 }))),
    max_completion_tokens: t.Optional(Nullable(t.Integer({ minimum: 1 }))),
    temperature: t.Optional(Nullable(t.Number({ minimum: 0, maximum: 2 }))),
    top_p: t.Optional(Nullable(t.Number({ minimum: 0, maximum: 1 }))),
    n: t.Optional(Nullable(t.Integer({ minimum: 1, maximum: 128 }))),
    seed: t.Optional(Nullable(t.Integer())),
    stop: t.Optional(Nullable(t.Union([t.String(), t.Array(t.String(), { maxItems: 4 })]))),
    presence_penalty: t.Optional(Nullable(t.Number({ minimum: -2, maximum: 2 }))),
    frequency_penalty: t.Optional(Nullable(t.Number({ minimum: -2, maximum: 2 }))),
    logit_bias: t.Optional(Nullable(t.Record(t.String(), t.Number()))),
    logprobs: t.Optional(Nullable(t.Boolean())),
    top_logprobs: t.Optional(Nullable(t.Integer({ minimum: 0, maximum: 20 }))),
    tools: t.Optional(t.Array(t.Object({ type: t.String() }, open))),
    tool_choice: t.Optional(t.Union([t.String(), t.Object({}, open)])),
    parallel_tool_calls: t.Optional(t.Boolean()),
    response_format: t.Optional(t.Object({ type: t.String() }, open)),
    user: t.Optional(t.String()),
  },
  { ...open, description: 'An OpenAI chat completion request; unknown fields are passed upstream.' },
)

export const Usage = t.Object(
  {
    prompt_tokens: t.Integer(),
    completion_tokens: t.Integer(),
    total_tokens: t.Integer(),
  },
  open,
)

export const ChatCompletionResponse = t.Object(
  {
    id: t.String(),
    object: t.Literal('chat.completion'),
    created: t.Integer(),
    model: t.String(),
    choices: t.Array(
      t.Object(
        {
          index: t.Integer(),
          message: t.Object({ role: t.String(), content: Nullable(t.String()) }, open),
          finish_reason: Nullable(t.String()),
        },
        open,
      ),
    ),
    usage: t.Optional(Usage),
  },
  {
    ...open,
    description: 'A chat completion; with `stream: true` the answer is `text/event-stream` chunks.',
  },
)

const TextInput = t.String({ minLength: 1 })
/** One `data:` frame of the event stream, the 200 answer when `stream: true`. */
export const ChatCompletionStreamFrame = t.Object(
  { data: t.String({ description: 'A JSON chat.completion.chunk, an error object, or [DONE]' }) },
  { description: 'text/event-stream frame' },
)

export const EmbeddingRequest = t.Object(
  {
    model: t.String({ minLength: 1, maxLength: 256 }),
    input: t.Union([
      TextInput,
      t.Array(TextInput, { minItems: 1, maxItems: 2048 }),
      t.Array(t.Integer(), { minItems: 1 }),
      t.Array(t.Array(t.Integer(), { minItems: 1 }), { minItems: 1, maxItems: 2048 }),
    ]),
    encoding_format: t.Optional(t.Union([t.Literal('float'), t.Literal('base64')])),
    dimensions: t.Optional(t.Integer({ minimum: 1 })),
    user: t.Optional(t.String()),
  },
  open,
)

/**
 * Documents the answer; Elysia does not check it (`noValidate`). The route builds it from
 * float32 vectors, and checking every number of every vector cost more than serialising them
 * (64 inputs of 1,536 dimensions: 17 ms a response with the check, 11 without; one input:
 * 0.75 ms against 0.45).
 */
export const EmbeddingResponse = t.Object(
  {
    object: t.Literal('list'),
    data: t.Array(
      t.Object({
        object: t.Literal('embedding'),
        index: t.Integer(),
        embedding: t.Union([t.Array(t.Number()), t.String()]),
      }),
    ),
    model: t.String(),
    usage: t.Object({ prompt_tokens: t.Integer(), total_tokens: t.Integer() }),
  },
  { noValidate: true },
)

export const ModelList = t.Object({
  object: t.Literal('list'),
  data: t.Array(
    t.Object({ id: t.String(), object: t.Literal('model'), created: t.Integer(), owned_by: t.String() }),
  ),
})

export const OpenAIError = OpenAIErrorSchema

/** The statuses every model route can answer with the error envelope. */
export const modelErrorResponses = {
  400: OpenAIError,
  401: OpenAIError,
  404: OpenAIError,
  413: OpenAIError,
  415: OpenAIError,
  429: OpenAIError,
  500: OpenAIError,
  502: OpenAIError,
  503: OpenAIError,
  504: OpenAIError,
}
