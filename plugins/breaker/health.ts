/**
 * The breakers' part of the readiness probe: degraded while any breaker is not closed (the
 * gateway still serves, through fallbacks or with fast 503s), with the affected targets in
 * the message. Shaped like the application's HealthCheck without importing it.
 */
import type { BreakerService } from './service'

export interface BreakerHealthCheck {
  name: string
  failureStatus: 'degraded'
  check(): Promise<{ status: 'healthy' | 'degraded'; message: string }>
}

export function breakerHealthCheck(breakers: BreakerService): BreakerHealthCheck {
  return {
    name: 'breakers',
    failureStatus: 'degraded',
    async check() {
      const views = breakers.list()
      const tripped = views.filter((view) => view.state !== 'closed')
      const scope = breakers.shared ? 'shared' : 'per instance'
      if (tripped.length === 0) return { status: 'healthy', message: `${views.length} closed (${scope})` }
      const listed = tripped.map((view) => {
        const next =
          view.nextProbeAt === null ? '' : `, next probe ${new Date(view.nextProbeAt).toISOString()}`
        return `${view.target} ${view.state}${next}`
      })
      return {
        status: 'degraded',
        message: `${listed.join('; ')} (${views.length - tripped.length} closed, ${scope})`,
      }
    },
  }
}
