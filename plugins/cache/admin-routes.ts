/**
 * Cache administration: invalidate one user's entries or all of them. Defined without a
 * prefix or an auth check of its own; the application mounts it under `/admin` inside its
 * admin guard. Each answer says exactly what was invalidated.
 */
import { Elysia, t } from 'elysia'
import { ApiError, ProblemSchema as Problem } from '../exchange'
import { StoreUnavailableError } from '../store'
import type { CacheService } from './service'

const UserInvalidated = t.Object(
  {
    scope: t.Literal('user'),
    user_id: t.String(),
    namespace: t.String({ description: "The user's cache namespace." }),
    version: t.Integer({ description: 'Its new version; entries stored under older ones no longer match.' }),
  },
  { description: "The user's entries; entries of shared namespaces are untouched." },
)

const AllInvalidated = t.Object(
  {
    scope: t.Literal('all'),
    epoch: t.Integer({
      description: 'The new global epoch; every entry stored before it no longer matches.',
    }),
  },
  { description: 'Every entry, in every namespace.' },
)

function unavailable(error: unknown): unknown {
  if (!(error instanceof StoreUnavailableError)) return error
  return new ApiError({
    status: 503,
    message: 'The cache store is unavailable; nothing was invalidated. Retry shortly.',
    code: 'cache_unavailable',
    headers: { 'retry-after': '1' },
  })
}

export function cacheAdmin(service: CacheService) {
  return new Elysia({ name: 'tollgate/cache-admin', seed: service.id }).delete(
    '/cache',
    async function invalidateCache({ query }) {
      try {
        if (query.user === undefined) return { scope: 'all' as const, epoch: await service.invalidateAll() }
        const { userId, namespace, version } = await service.invalidateUser(query.user)
        return { scope: 'user' as const, user_id: userId, namespace, version }
      } catch (error) {
        throw unavailable(error)
      }
    },
    {
      query: t.Object({
        user: t.Optional(
          t.String({
            minLength: 1,
            maxLength: 128,
            pattern: '^[A-Za-z0-9._@+:-]+$',
            description: "Invalidate only this user's entries; without it, every entry.",
          }),
        ),
      }),
      response: { 200: t.Union([UserInvalidated, AllInvalidated]), 400: Problem, 401: Problem, 503: Problem },
      detail: {
        summary: "Invalidate cached answers: one user's (`?user=`), or all",
        description:
          'O(1): bumps a version that every entry records, so old entries stop matching at once and expire by their TTL.',
        tags: ['cache'],
        security: [{ bearerAuth: [] }],
      },
    },
  )
}
