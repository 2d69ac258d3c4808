/**
 * The breaker administration API: list every target's breaker, close one, close all.
 * Defined without a prefix or auth; the application mounts it under `/admin` behind the
 * admin key. A reset closes the breaker in Redis too, so every instance follows within its
 * refresh interval.
 */
import { Elysia, t } from 'elysia'
import { ApiError, ProblemSchema as Problem } from '../exchange'
import type { BreakerService } from './service'
import type { BreakerView } from './view'

const Time = t.Union([t.String({ format: 'date-time' }), t.Null()])

const BreakerInfo = t.Object({
  target: t.String({ description: 'provider:upstream_model' }),
  state: t.Union([t.Literal('closed'), t.Literal('open'), t.Literal('half_open')]),
  failures: t.Integer({ description: 'Failures within the rolling window.' }),
  calls: t.Integer({ description: 'Calls within the rolling window.' }),
  window_ms: t.Integer(),
  last_failure_at: Time,
  last_failure: t.Union([t.String(), t.Null()]),
  opened_at: Time,
  next_probe_at: t.Union([t.String({ format: 'date-time' }), t.Null()], {
    description: 'When a call may get through again; null while calls pass.',
  }),
  cooldown_ms: t.Integer(),
  probes_in_flight: t.Integer(),
  half_open_successes: t.Integer(),
})

const BreakerList = t.Object({
  shared: t.Boolean({ description: 'Whether breaker state is shared by every instance (Redis).' }),
  data: t.Array(BreakerInfo),
})

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

function info(view: BreakerView, windowMs: number) {
  return {
    target: view.target,
    state: view.state,
    failures: view.failures,
    calls: view.calls,
    window_ms: windowMs,
    last_failure_at: iso(view.lastFailureAt),
    last_failure: view.lastFailure,
    opened_at: iso(view.openedAt),
    next_probe_at: iso(view.nextProbeAt),
    cooldown_ms: view.cooldownMs,
    probes_in_flight: view.probesInFlight,
    half_open_successes: view.halfOpenSuccesses,
  }
}

const docs = (summary: string) => ({ summary, tags: ['breakers'], security: [{ bearerAuth: [] }] })

export function breakerAdmin(breakers: BreakerService) {
  const list = () => ({
    shared: breakers.shared,
    data: breakers.list().map((view) => info(view, breakers.policyOf(view.target).windowMs)),
  })
  return new Elysia({ name: 'tollgate/breaker-admin' })
    .get('/breakers', list, {
      response: { 200: BreakerList, 401: Problem },
      detail: docs('Every upstream target with its breaker state, failure counts and next probe time'),
    })
    .post(
      '/breakers/:target/reset',
      async function resetBreaker({ params }) {
        if (!(await breakers.reset(params.target)))
          throw new ApiError({
            status: 404,
            message: `No breaker for target '${params.target}'.`,
            code: 'breaker_not_found',
            param: 'target',
          })
        return info(breakers.view(params.target), breakers.policyOf(params.target).windowMs)
      },
      {
        params: t.Object({ target: t.String({ minLength: 1, description: 'provider:upstream_model' }) }),
        response: { 200: BreakerInfo, 401: Problem, 404: Problem },
        detail: docs('Close one breaker (forgets its failures), on every instance'),
      },
    )
    .post(
      '/breakers/reset',
      async function resetAllBreakers() {
        await breakers.resetAll()
        return list()
      },
      {
        response: { 200: BreakerList, 401: Problem },
        detail: docs('Close every breaker, on every instance'),
      },
    )
}
