/**
 * The monitoring and Kubernetes files, held to what the gateway really serves: promtool
 * accepts the Prometheus config and rules; the dashboards parse, use the provisioned
 * datasource, and every PromQL expression in them and in the rules names only metrics a
 * live gateway's `/metrics` exposes (and every gateway metric is shown or alerted on); the
 * Kubernetes manifests parse, their probes hit routes the app answers, their config loads.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readdirSync } from 'node:fs'
import { buildConfig } from '../src/config'
import { requirePostgres } from './support/db'
import { parseExposition } from './support/exposition'
import { type Gateway, startGateway } from './support/gateway'

const root = `${import.meta.dir}/..`
const read = (path: string) => Bun.file(`${root}/${path}`).text()
const yamlDocs = async (path: string) => {
  const parsed = Bun.YAML.parse(await read(path))
  return (Array.isArray(parsed) ? parsed : [parsed]) as Array<Record<string, unknown>>
}

interface Panel {
  title: string
  datasource?: { uid?: string }
  targets?: Array<{ expr: string }>
}
interface Dashboard {
  uid: string
  title: string
  panels: Panel[]
}
interface Rule {
  alert: string
  expr: string
}

const dashboardFiles = readdirSync(`${root}/deploy/grafana/dashboards`).filter((f) => f.endsWith('.json'))
const dashboards: Dashboard[] = await Promise.all(
  dashboardFiles.map(async (file) => JSON.parse(await read(`deploy/grafana/dashboards/${file}`))),
)
const rules = (
  (await yamlDocs('deploy/prometheus/rules/tollgate.yml'))[0] as { groups: Array<{ rules: Rule[] }> }
).groups[0]!.rules

const promqlKeywords = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or'])
for (const word of ['unless', 'bool', 'offset', 'inf', 'nan']) promqlKeywords.add(word)

/** Metric names an expression selects: identifiers left once strings, matchers, ranges and label lists are gone. */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\w+/g, ' ')
  const names: string[] = []
  for (const match of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const before = stripped[match.index - 1] ?? ' '
    const after = stripped.slice(match.index + match[0].length).trimStart()[0]
    if (/[0-9.]/.test(before) || after === '(' || promqlKeywords.has(match[0].toLowerCase())) continue
    names.push(match[0])
  }
  return names
}

let gateway: Gateway
let exposed: Set<string>
let families: string[]

beforeAll(async () => {
  gateway = await startGateway({
    env: { DATABASE_URL: await requirePostgres() },
    file: { observability: { alerts: { daily_cost_usd: 100 } } },
  })
  const parsed = parseExposition(await (await fetch(`${gateway.url}/metrics`)).text())
  families = [...parsed.keys()]
  exposed = new Set(['up'])
  for (const family of parsed.values()) {
    exposed.add(family.name)
    if (family.type === 'histogram')
      for (const suffix of ['_bucket', '_sum', '_count']) exposed.add(family.name + suffix)
  }
})

afterAll(async () => {
  await gateway?.stop()
})

describe('Prometheus', () => {
  const promtool = (...args: string[]) => {
    const run = Bun.spawnSync(['promtool', ...args], {
      cwd: `${root}/deploy/prometheus`,
      stdout: 'pipe',
      stderr: 'pipe',
    })
    return { code: run.exitCode, output: `${run.stdout.toString()}${run.stderr.toString()}` }
  }

  test('promtool is installed (apt-get install prometheus; .ci/run does it)', () => {
    expect(Bun.which('promtool')).not.toBeNull()
  })

  test('promtool check config and check rules pass', () => {
    const config = promtool('check', 'config', 'prometheus.yml')
    expect(config.output).toContain('SUCCESS')
    expect(config.code).toBe(0)
    const checked = promtool('check', 'rules', 'rules/tollgate.yml')
    expect(checked.output).toContain('SUCCESS: 10 rules found')
    expect(checked.code).toBe(0)
  })

  test('scrapes the compose gateway at /metrics', async () => {
    const config = (await yamlDocs('deploy/prometheus/prometheus.yml'))[0] as {
      scrape_configs: Array<{ metrics_path: string; static_configs: Array<{ targets: string[] }> }>
    }
    const job = config.scrape_configs[0]!
    expect(job.metrics_path).toBe('/metrics')
    expect(job.static_configs[0]!.targets).toEqual(['tollgate:8080'])
  })

  test('has every alert the operators are promised', () => {
    expect(rules.map((rule) => rule.alert).sort()).toEqual([
      'TollgateBreakerOpen',
      'TollgateCacheHitRateLow',
      'TollgateDailyCostHigh',
      'TollgateDatabaseDown',
      'TollgateDown',
      'TollgateHighErrorRate',
      'TollgateHighLatencyP99',
      'TollgateLedgerBacklogGrowing',
      'TollgateQuotaDenials',
      'TollgateRedisDown',
    ])
  })
})

describe('Grafana', () => {
  test('the three dashboards parse, have unique uids and use the provisioned datasource', async () => {
    expect(dashboards.map((d) => d.title).sort()).toEqual(['Cost', 'Gateway performance', 'Health'])
    expect(new Set(dashboards.map((d) => d.uid)).size).toBe(3)
    const provisioned = (await yamlDocs('deploy/grafana/provisioning/datasources/prometheus.yml'))[0] as {
      datasources: Array<{ uid: string; url: string }>
    }
    const uid = provisioned.datasources[0]!.uid
    for (const panel of dashboards.flatMap((d) => d.panels)) {
      expect(panel.datasource?.uid).toBe(uid)
      expect(panel.targets?.length).toBeGreaterThan(0)
    }
  })
})

describe('PromQL', () => {
  const expressions = [
    ...rules.map((rule) => ({ where: `rule ${rule.alert}`, expr: rule.expr })),
    ...dashboards.flatMap((d) =>
      d.panels.flatMap((p) =>
        (p.targets ?? []).map((t) => ({ where: `${d.title} / ${p.title}`, expr: t.expr })),
      ),
    ),
  ]

  test('the name extraction sees through functions, matchers, ranges and label lists', () => {
    expect(
      metricNames(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{route=~"/v1/.*"}[5m]))) > 1e3 and on() b',
      ),
    ).toEqual(['a_bucket', 'b'])
  })

  test('every expression names only metrics a live gateway exposes', () => {
    const unknown = expressions.flatMap(({ where, expr }) =>
      metricNames(expr)
        .filter((name) => !exposed.has(name))
        .map((name) => `${where}: ${name}`),
    )
    expect(unknown).toEqual([])
    expect(expressions.length).toBeGreaterThan(40)
  })

  test('every gateway metric is on a dashboard or in an alert', () => {
    const used = new Set(expressions.flatMap(({ expr }) => metricNames(expr)))
    const unused = families
      .filter((name) => name.startsWith('tollgate_') && name !== 'tollgate_build_info')
      .filter((name) => ![name, `${name}_bucket`, `${name}_count`].some((n) => used.has(n)))
    expect(unused).toEqual([])
  })
})

describe('Kubernetes', () => {
  const files = readdirSync(`${root}/deploy/k8s`).filter((f) => f.endsWith('.yaml'))
  const manifests = async () =>
    (
      await Promise.all(
        files.filter((f) => f !== 'kustomization.yaml').map((f) => yamlDocs(`deploy/k8s/${f}`)),
      )
    ).flat()
  const ofKind = async <T>(kind: string) => (await manifests()).find((m) => m.kind === kind) as T

  interface Container {
    ports: Array<{ name: string; containerPort: number }>
    env: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef: { name: string; key: string } } }>
    startupProbe: { httpGet: { path: string; port: string } }
    livenessProbe: { httpGet: { path: string; port: string } }
    readinessProbe: { httpGet: { path: string; port: string } }
  }
  interface Deployment {
    spec: {
      selector: { matchLabels: Record<string, string> }
      template: { metadata: { labels: Record<string, string> }; spec: { containers: Container[] } }
    }
  }

  test('every manifest parses; kustomization lists them all; the kinds are all there', async () => {
    const kustomization = (await yamlDocs('deploy/k8s/kustomization.yaml'))[0] as { resources: string[] }
    expect([...kustomization.resources].sort()).toEqual(
      files.filter((f) => f !== 'kustomization.yaml').sort(),
    )
    expect((await manifests()).map((m) => m.kind).sort()).toEqual([
      'ConfigMap',
      'Deployment',
      'HorizontalPodAutoscaler',
      'PodDisruptionBudget',
      'Service',
    ])
  })

  test('the probes ask the health routes, and the app answers each of them', async () => {
    const container = (await ofKind<Deployment>('Deployment')).spec.template.spec.containers[0]!
    const probes = [container.startupProbe, container.livenessProbe, container.readinessProbe]
    expect(probes.map((probe) => probe.httpGet.path)).toEqual([
      '/health/startup',
      '/health/live',
      '/health/ready',
    ])
    for (const probe of probes) {
      expect(container.ports.map((port) => port.name)).toContain(probe.httpGet.port)
      expect((await fetch(`${gateway.url}${probe.httpGet.path}`)).status).toBe(200)
    }
    expect(container.ports[0]!.containerPort).toBe(8080)
  })

  test('secrets come from the Secret; the ConfigMap holds a config that loads with them', async () => {
    const container = (await ofKind<Deployment>('Deployment')).spec.template.spec.containers[0]!
    const fromSecret = container.env
      .filter((e) => e.valueFrom)
      .map((e) => [e.name, e.valueFrom!.secretKeyRef.key])
    expect(fromSecret).toEqual(
      ['ADMIN_API_KEY', 'OPENAI_API_KEY', 'DATABASE_URL', 'REDIS_URL'].map((n) => [n, n]),
    )
    const configMap = await ofKind<{ data: Record<string, string> }>('ConfigMap')
    const file = Bun.YAML.parse(configMap.data['tollgate.yaml']!)
    const config = buildConfig({ NODE_ENV: 'production', ADMIN_API_KEY: 'k8s-admin-key-0123456789' }, file)
    expect(config.observability.dailyCostAlertUsd).toBe(500)
    expect(container.env.find((e) => e.name === 'TOLLGATE_CONFIG')?.value).toBe('/etc/tollgate/tollgate.yaml')
  })

  test('Service, autoscaler and disruption budget all select the Deployment', async () => {
    const deployment = await ofKind<Deployment>('Deployment')
    const labels = deployment.spec.template.metadata.labels
    expect(deployment.spec.selector.matchLabels).toEqual(labels)
    const service = await ofKind<{
      spec: { selector: Record<string, string>; ports: Array<{ targetPort: string }> }
    }>('Service')
    expect(service.spec.selector).toEqual(labels)
    expect(service.spec.ports[0]!.targetPort).toBe('http')
    const pdb = await ofKind<{ spec: { selector: { matchLabels: Record<string, string> } } }>(
      'PodDisruptionBudget',
    )
    expect(pdb.spec.selector.matchLabels).toEqual(labels)
    const hpa = await ofKind<{
      spec: { scaleTargetRef: { kind: string; name: string }; minReplicas: number }
    }>('HorizontalPodAutoscaler')
    expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: 'tollgate' })
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2)
  })
})
