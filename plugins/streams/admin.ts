/**
 * The stream administration API: list the instance's active streams, cancel one. Defined
 * without a prefix or auth; the application mounts it under `/admin` behind the admin key.
 * The registry is per instance, so each instance lists and cancels its own streams.
 */
import { Elysia, t } from 'elysia'
import { ApiError, ProblemSchema as Problem } from '../exchange'
import type { StreamRegistry } from './registry'

const Nullable = <S extends ReturnType<typeof t.String>>(schema: S) => t.Union([schema, t.Null()])

const StreamInfo = t.Object({
  id: t.String({ description: 'The request id (`X-Request-Id`) of the streaming request.' }),
  key_id: Nullable(t.String()),
  user_id: Nullable(t.String()),
  model: Nullable(t.String({ description: 'The model serving the stream.' })),
  started_at: t.String({ format: 'date-time' }),
  tokens: t.Integer({ description: 'Content tokens sent to the client so far.' }),
  bytes: t.Integer({ description: 'Bytes of SSE frames sent to the client so far.' }),
})

const StreamList = t.Object({ data: t.Array(StreamInfo) })

const Cancelled = t.Object({ id: t.String(), cancelled: t.Literal(true) })

const docs = (summary: string, description?: string) => ({
  summary,
  description,
  tags: ['streams'],
  security: [{ bearerAuth: [] }],
})

export function streamsAdmin(registry: StreamRegistry) {
  return new Elysia({ name: 'tollgate/streams-admin' })
    .get('/streams', () => ({ data: registry.list() }), {
      response: { 200: StreamList, 401: Problem },
      detail: docs('The SSE streams active on this instance, with tokens and bytes sent so far'),
    })
    .post(
      '/streams/:id/cancel',
      function cancelStream({ params }) {
        if (!registry.cancel(params.id))
          throw new ApiError({
            status: 404,
            message: `No active stream '${params.id}' on this instance.`,
            code: 'stream_not_found',
            param: 'id',
          })
        return { id: params.id, cancelled: true as const }
      },
      {
        params: t.Object({ id: t.String({ minLength: 1, maxLength: 128, description: 'The stream id.' }) }),
        response: { 200: Cancelled, 401: Problem, 404: Problem },
        detail: docs(
          'Cancel one active stream',
          'The client receives an SSE error event with `code: "cancelled"` and the stream ends; the upstream call is aborted, and the request settles as cancelled, billed for the tokens streamed so far.',
        ),
      },
    )
}
