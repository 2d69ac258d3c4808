/**
 * The key administration API: create, list, show and revoke keys. Defined here without a
 * prefix; the application mounts it under `/admin`. Every answer is built field by field
 * from a record that has no hash in it, so neither hashes nor plaintexts can be listed.
 */
import { Elysia, t } from 'elysia'
import { ApiError, ProblemSchema as Problem } from '../exchange'
import type { ApiKeyRecord } from './keys'
import { type AuthOptions, auth } from './macros'

export interface AuthAdminOptions extends AuthOptions {
  /** The tier names a key may be created with: the configured tiers. */
  tiers: readonly string[]
}

const uuidPattern = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
const userIdPattern = '^[A-Za-z0-9._@+:-]+$'
/**
 * Printable text: no control characters (Postgres text cannot hold U+0000) and no lone
 * surrogate halves (they have no UTF-8 form); surrogate pairs, i.e. emoji, are fine.
 */
const labelPattern = '^(?:[^\\u0000-\\u001f\\u007f\\ud800-\\udfff]|[\\ud800-\\udbff][\\udc00-\\udfff])+$'
const Timestamp = t.String({ format: 'date-time' })

const KeyView = t.Object({
  id: t.String({ format: 'uuid' }),
  user_id: t.String(),
  name: t.String(),
  tier: t.String(),
  prefix: t.String({ description: 'The first characters of the key, to tell keys apart.' }),
  created_at: Timestamp,
  revoked_at: t.Union([Timestamp, t.Null()]),
})

const CreatedKey = t.Object({
  id: t.String({ format: 'uuid' }),
  key: t.String({ description: 'The plaintext key. Shown in this answer only; store it now.' }),
  user_id: t.String(),
  name: t.String(),
  tier: t.String(),
  prefix: t.String(),
  created_at: Timestamp,
})

const KeyId = t.Object({ id: t.String({ format: 'uuid', pattern: uuidPattern }) })

function keyView(record: ApiKeyRecord) {
  return {
    id: record.id,
    user_id: record.userId,
    name: record.name,
    tier: record.tier,
    prefix: record.prefix,
    created_at: record.createdAt.toISOString(),
    revoked_at: record.revokedAt?.toISOString() ?? null,
  }
}

function keyNotFound(id: string): ApiError {
  return new ApiError({
    status: 404,
    message: `No API key with id ${id}.`,
    code: 'key_not_found',
    param: 'id',
  })
}

const docs = (summary: string) => ({ summary, tags: ['keys'], security: [{ bearerAuth: [] }] })

export function authAdmin(options: AuthAdminOptions) {
  const { keys, tiers } = options
  const knownTiers = new Set(tiers)

  return new Elysia({ name: 'tollgate/auth-admin', seed: keys.id })
    .use(auth(options))
    .post(
      '/keys',
      async function createKey({ body, status }) {
        if (!knownTiers.has(body.tier))
          throw new ApiError({
            status: 400,
            message: `Unknown tier '${body.tier}'; expected one of: ${tiers.join(', ')}.`,
            code: 'invalid_value',
            param: 'tier',
          })
        const { record, key } = await keys.create({ userId: body.user_id, name: body.name, tier: body.tier })
        const { id, user_id, name, tier, prefix, created_at } = keyView(record)
        return status(201, { id, key, user_id, name, tier, prefix, created_at })
      },
      {
        admin: true,
        body: t.Object({
          user_id: t.String({
            minLength: 1,
            maxLength: 128,
            pattern: userIdPattern,
            description: 'Who the key belongs to; letters, digits and . _ @ + : -',
          }),
          name: t.String({
            minLength: 1,
            maxLength: 200,
            pattern: labelPattern,
            description: 'A label, e.g. the machine it is used on; printable text.',
          }),
          tier: t.String({ enum: [...tiers], description: 'One of the configured tiers.' }),
        }),
        response: { 201: CreatedKey, 400: Problem, 401: Problem },
        detail: docs('Create an API key'),
      },
    )
    .get(
      '/keys',
      async function listKeys({ query }) {
        const records = await keys.list({ userId: query.user_id })
        return { data: records.map(keyView) }
      },
      {
        admin: true,
        query: t.Object({
          user_id: t.Optional(t.String({ minLength: 1, maxLength: 128, pattern: userIdPattern })),
        }),
        response: { 200: t.Object({ data: t.Array(KeyView) }), 400: Problem, 401: Problem },
        detail: docs('List API keys, newest first'),
      },
    )
    .get(
      '/keys/:id',
      async function showKey({ params }) {
        const record = await keys.get(params.id)
        if (!record) throw keyNotFound(params.id)
        return keyView(record)
      },
      {
        admin: true,
        params: KeyId,
        response: { 200: KeyView, 400: Problem, 401: Problem, 404: Problem },
        detail: docs('Show an API key'),
      },
    )
    .delete(
      '/keys/:id',
      async function revokeKey({ params }) {
        const record = await keys.revoke(params.id)
        if (!record) throw keyNotFound(params.id)
        return keyView(record)
      },
      {
        admin: true,
        params: KeyId,
        response: { 200: KeyView, 400: Problem, 401: Problem, 404: Problem },
        detail: docs('Revoke an API key (idempotent; takes effect everywhere within the key cache TTL)'),
      },
    )
}
