/**
 * The schemas of the two error envelopes the exchange plugin renders, for the routes'
 * response declarations (and so the OpenAPI document): one definition, used by every plugin.
 */
import { t } from 'elysia'

/** RFC 9457 problem details, as rendered for errors outside `/v1`. */
export const ProblemSchema = t.Object(
  {
    type: t.String(),
    title: t.String(),
    status: t.Integer(),
    detail: t.String(),
    instance: t.String(),
    code: t.Optional(t.String()),
    param: t.Optional(t.String()),
  },
  { description: 'application/problem+json' },
)

/** The OpenAI error envelope, as rendered for errors on `/v1`. */
export const OpenAIErrorSchema = t.Object(
  {
    error: t.Object({
      message: t.String(),
      type: t.String(),
      param: t.Union([t.String(), t.Null()]),
      code: t.Union([t.String(), t.Null()]),
    }),
  },
  { description: 'The OpenAI error envelope.' },
)
