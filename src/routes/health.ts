/**
 * Health probes. Liveness depends on nothing; readiness pings every dependency with a
 * short timeout and answers 503 only when the gateway cannot serve at all (a degraded
 * dependency has a fallback, so the instance stays in the load balancer).
 */
import { Elysia, t } from 'elysia'

export type HealthStatus = 'healthy' | 'degraded' | 'unhealthy'

export interface ComponentHealth {
  status: HealthStatus
  latency_ms: number | null
  message: string
}

/** A dependency the readiness probe checks; plugins contribute their own. */
export interface HealthCheck {
  name: string
  /** Returns a status and message; a throw or timeout counts as `failureStatus`. */
  check(): Promise<{ status: HealthStatus; message: string }>
  /** What a failed check means for the instance. */
  failureStatus: HealthStatus
}

export interface Lifecycle {
  /** Config loaded and migrations applied. */
  started: boolean
  /** Set when shutdown begins, so load balancers stop sending before the drain. */
  draining: boolean
}

export interface HealthOptions {
  checks: HealthCheck[]
  lifecycle: Lifecycle
  /**
   * Time allowed to each dependency check, in ms.
   * @default 500
   */
  timeoutMs?: number
}

const rank: Record<HealthStatus, number> = { healthy: 0, degraded: 1, unhealthy: 2 }

async function runCheck(check: HealthCheck, timeoutMs: number): Promise<ComponentHealth> {
  const started = performance.now()
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
  })
  try {
    const result = await Promise.race([check.check(), timeout])
    return { ...result, latency_ms: Math.round((performance.now() - started) * 100) / 100 }
  } catch (error) {
    return { status: check.failureStatus, latency_ms: null, message: (error as Error).message }
  } finally {
    clearTimeout(timer)
  }
}

const Component = t.Object({
  status: t.Union([t.Literal('healthy'), t.Literal('degraded'), t.Literal('unhealthy')]),
  latency_ms: t.Union([t.Number(), t.Null()]),
  message: t.String(),
})
const Report = t.Object({
  status: t.Union([t.Literal('healthy'), t.Literal('degraded'), t.Literal('unhealthy')]),
  components: t.Record(t.String(), Component),
})
const Simple = t.Object({ status: t.String() })

export function healthRoutes({ checks, lifecycle, timeoutMs = 500 }: HealthOptions) {
  async function report() {
    const results = await Promise.all(checks.map((check) => runCheck(check, timeoutMs)))
    const components: Record<string, ComponentHealth> = {}
    let status: HealthStatus = lifecycle.draining || !lifecycle.started ? 'unhealthy' : 'healthy'
    checks.forEach((check, i) => {
      const result = results[i]!
      components[check.name] = result
      if (rank[result.status] > rank[status]) status = result.status
    })
    if (lifecycle.draining)
      components.lifecycle = { status: 'unhealthy', latency_ms: null, message: 'draining' }
    return { status, components }
  }

  const detail = (summary: string) => ({ summary, tags: ['health'] })
  return new Elysia({ name: 'tollgate/routes/health' })
    .get('/health/live', () => ({ status: 'ok' }), {
      response: { 200: Simple },
      detail: detail('Liveness: the process answers'),
    })
    .get(
      '/health/startup',
      function startupProbe({ status }) {
        return lifecycle.started ? { status: 'started' } : status(503, { status: 'starting' })
      },
      {
        response: { 200: Simple, 503: Simple },
        detail: detail('Startup: config loaded, migrations applied, Redis waited for'),
      },
    )
    .get(
      '/health/ready',
      async function readinessProbe({ status }) {
        const body = await report()
        return body.status === 'unhealthy' ? status(503, body) : body
      },
      { response: { 200: Report, 503: Report }, detail: detail('Readiness: dependencies answer') },
    )
    .get(
      '/health',
      async function healthReport({ status }) {
        const body = await report()
        return body.status === 'unhealthy' ? status(503, body) : body
      },
      {
        response: { 200: Report, 503: Report },
        detail: detail('Every component with status, latency and message'),
      },
    )
}
