/**
 * The deployment files cannot be run here (no Docker engine in CI), so they are held to
 * their contracts by reading them: compose runs the same Redis and Postgres, with the same
 * settings, as .ci/run gives the tests; the image is multi-stage, non-root, health-checked
 * and on the Bun major CI tests with; the example config loads and documents every setting.
 */
import { describe, expect, test } from 'bun:test'
import { statSync } from 'node:fs'
import { buildConfig } from '../src/config'
import { ConfigFileSchema } from '../src/config-schema'

const root = `${import.meta.dir}/..`
const read = (path: string) => Bun.file(`${root}/${path}`).text()

interface Service {
  image?: string
  build?: unknown
  command?: string[]
  ports?: string[]
  environment?: Record<string, string | null>
  healthcheck?: { test?: string[] }
  depends_on?: Record<string, { condition?: string }>
  volumes?: string[]
  configs?: Array<{ source: string; target: string }>
}
interface Compose {
  services: Record<string, Service>
  volumes?: Record<string, unknown>
  configs?: Record<string, { content?: string }>
}

const compose = Bun.YAML.parse(await read('compose.yaml')) as Compose
const service = (name: string): Service => {
  const found = compose.services[name]
  if (!found) throw new Error(`compose.yaml has no service "${name}"`)
  return found
}
const ciRun = await read('.ci/run')
const dockerfile = await read('Dockerfile')
const dockerignore = await read('.dockerignore')
const readme = await read('README.md')
const example = Bun.YAML.parse(await read('deploy/tollgate.example.yaml'))

/** Splits a shell command line into words, honouring single and double quotes. */
function shellWords(line: string): string[] {
  return (line.match(/"[^"]*"|'[^']*'|[^\s"']+/g) ?? []).map((word) => word.replace(/^(["'])(.*)\1$/, '$2'))
}

/** The value following `flag` in a list of words. */
function flagValue(words: string[], flag: string): string | undefined {
  const at = words.indexOf(flag)
  return at < 0 ? undefined : words[at + 1]
}

interface Instruction {
  keyword: string
  args: string
}

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function dockerInstructions(text: string): Instruction[] {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const [keyword = '', ...rest] = line.split(/\s+/)
      return { keyword: keyword.toUpperCase(), args: rest.join(' ') }
    })
}

const ciBunMajor = ciRun.match(/^BUN_MAJOR=(\d+)$/m)?.[1]

describe('compose.yaml', () => {
  test('runs the gateway with Redis 7.0 and Postgres 15, the versions CI tests against', () => {
    // Next to them, the monitoring stack (test/deploy-observability.test.ts holds it to its files).
    expect(Object.keys(compose.services).sort()).toEqual([
      'grafana',
      'jaeger',
      'postgres',
      'prometheus',
      'redis',
      'tollgate',
    ])
    expect(service('tollgate').build).toBe('.')
    expect(service('redis').image).toBe('redis:7.0')
    expect(service('postgres').image).toBe('postgres:15')
  })

  test('Redis and Postgres have health checks and the gateway waits for both to be healthy', () => {
    expect(service('redis').healthcheck?.test).toContain('redis-cli')
    expect(service('postgres').healthcheck?.test).toContain('pg_isready')
    expect(service('tollgate').depends_on).toEqual({
      redis: { condition: 'service_healthy' },
      postgres: { condition: 'service_healthy' },
    })
  })

  test('the gateway is wired to both services by env and runs in production mode', () => {
    const env = service('tollgate').environment ?? {}
    expect(env.NODE_ENV).toBe('production')
    expect(new URL(env.REDIS_URL ?? '').host).toBe('redis:6379')
    const database = new URL(env.DATABASE_URL ?? '')
    expect(database.host).toBe('postgres:5432')
    expect(database.pathname).toBe(`/${service('postgres').environment?.POSTGRES_DB}`)
    // Passed through from the caller's environment, never written into the file.
    expect(env.ADMIN_API_KEY).toBeNull()
    expect(env.OPENAI_API_KEY).toBeNull()
  })

  test('the gateway may hold two sockets per stream for 10,000 streams', () => {
    const { nofile } = (service('tollgate') as { ulimits?: { nofile?: { soft: number; hard: number } } })
      .ulimits ?? { nofile: undefined }
    expect(nofile?.soft).toBeGreaterThanOrEqual(20_000)
    expect(nofile?.hard).toBeGreaterThanOrEqual(nofile?.soft ?? 0)
  })

  test('every named volume a service mounts is declared, and every declared one is used', () => {
    const mounted = Object.values(compose.services)
      .flatMap((s) => s.volumes ?? [])
      .map((volume) => volume.split(':')[0] ?? '')
      .filter((source) => !source.startsWith('.') && !source.startsWith('/'))
    expect(mounted.length).toBeGreaterThan(0)
    expect(new Set(mounted)).toEqual(new Set(Object.keys(compose.volumes ?? {})))
  })

  test("Redis runs with the persistence flags of .ci/run's start command", () => {
    const ciLine = ciRun.split('\n').find((line) => /^\s*redis-server\s/.test(line))
    expect(ciLine).toBeDefined()
    const ci = shellWords(ciLine ?? '')
    const composed = service('redis').command ?? []
    expect(composed[0]).toBe('redis-server')
    for (const flag of ['--save', '--appendonly']) {
      expect(flagValue(ci, flag)).toBeDefined()
      expect(flagValue(composed, flag)).toBe(flagValue(ci, flag)!)
    }
  })

  test('Redis and Postgres answer on loopback where the tests look for them', () => {
    expect(service('redis').ports).toEqual(['127.0.0.1:6379:6379'])
    expect(service('postgres').ports).toEqual(['127.0.0.1:5432:5432'])
  })

  test('Postgres lets the tests in as CI does: user postgres, no password, database test', () => {
    const postgres = service('postgres')
    expect(postgres.environment?.POSTGRES_HOST_AUTH_METHOD).toBe('trust')
    const init = (postgres.configs ?? []).map((c) => ({
      target: c.target,
      sql: compose.configs?.[c.source]?.content,
    }))
    expect(init).toHaveLength(1)
    expect(init[0]?.target).toStartWith('/docker-entrypoint-initdb.d/')
    expect(init[0]?.sql).toMatch(/create database test\b/i)
    expect(ciRun).toMatch(/^PG_DATABASE=test$/m)
  })
})

describe('Dockerfile', () => {
  const instructions = dockerInstructions(dockerfile)
  const lastStage = instructions.slice(instructions.findLastIndex((i) => i.keyword === 'FROM'))
  const last = (keyword: string) => lastStage.findLast((i) => i.keyword === keyword)?.args ?? ''

  test('is multi-stage on the official Bun image, at the Bun major CI pins and runs', () => {
    const bases = instructions.filter((i) => i.keyword === 'FROM').map((i) => i.args.split(/\s+/)[0] ?? '')
    expect(bases.length).toBeGreaterThanOrEqual(2)
    expect(ciBunMajor).toBeDefined()
    for (const base of bases) {
      const version = base.match(/^oven\/bun:(\d+)\.\d+\.\d+-slim$/)
      expect(version?.[1]).toBe(ciBunMajor!)
    }
    expect(new Set(bases).size).toBe(1)
    expect(Bun.version.split('.')[0]).toBe(ciBunMajor!)
  })

  test('runs as a non-root user', () => {
    expect(last('USER')).not.toMatch(/^(root|0)(:|$)/)
    expect(last('USER')).not.toBe('')
  })

  test('health-checks /health/live and starts the gateway in production mode', () => {
    expect(last('HEALTHCHECK')).toContain('/health/live')
    expect(JSON.parse(last('CMD'))).toEqual(['bun', 'run', 'src/main.ts'])
    expect(last('EXPOSE')).toBe('8080')
    expect(
      lastStage
        .filter((i) => i.keyword === 'ENV')
        .map((i) => i.args)
        .join(' '),
    ).toContain('NODE_ENV=production')
  })

  test("lifts Bun's fetch limit of 256 requests in flight, so upstream streams past 256 do not queue", () => {
    const env = lastStage
      .filter((i) => i.keyword === 'ENV')
      .map((i) => i.args)
      .join(' ')
    expect(Number(env.match(/BUN_CONFIG_MAX_HTTP_REQUESTS=(\d+)/)?.[1])).toBeGreaterThanOrEqual(10_000)
  })

  test('copies only paths that exist and that .dockerignore lets into the build context', () => {
    const allowed = dockerignore
      .split('\n')
      .filter((line) => line.startsWith('!'))
      .map((line) => line.slice(1))
    const copied = instructions
      .filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from'))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1))
      .map((path) => path.replace(/\/$/, ''))
    expect(copied.length).toBeGreaterThan(0)
    for (const path of copied) {
      expect(allowed).toContain(path)
      expect(() => statSync(`${root}/${path}`)).not.toThrow()
    }
  })
})

describe('.ci/run', () => {
  test('is an executable bash script that stops on the first unhandled error', () => {
    expect(statSync(`${root}/.ci/run`).mode & 0o111).toBe(0o111)
    expect(ciRun).toStartWith('#!/usr/bin/env bash\n')
    expect(ciRun).toMatch(/^set -euo pipefail$/m)
  })

  test("installs the locked dependencies, then runs typecheck, lint and the README's test command", () => {
    const readmeTest = readme.match(/## Test it\s+```sh\n([^`]*)```/)?.[1] ?? ''
    expect(readmeTest).toContain('bun test')
    const commands = ['bun install --frozen-lockfile', 'bun run typecheck', 'bun run lint', 'bun test']
    const lines = commands.map((command) =>
      ciRun.split('\n').findIndex((line) => line.trim().startsWith(command)),
    )
    expect(lines.every((line) => line >= 0)).toBe(true)
    expect([...lines].sort((a, b) => a - b)).toEqual(lines)
  })
})

describe('deploy/tollgate.example.yaml', () => {
  test('loads through buildConfig', () => {
    const config = buildConfig(
      { OPENAI_API_KEY: 'sk-test', METRICS_TOKEN: 'example-token' },
      example,
      'deploy/tollgate.example.yaml',
    )
    expect(Object.keys(config.models)).toContain('sim-1')
  })

  interface SchemaNode {
    properties?: Record<string, SchemaNode>
    patternProperties?: Record<string, SchemaNode>
    anyOf?: SchemaNode[]
  }
  const isMapping = (value: unknown): value is Record<string, unknown> =>
    typeof value === 'object' && value !== null && !Array.isArray(value)

  /** Schema paths that no value in the example sets. Union members are told apart by their `type`. */
  function unset(schema: SchemaNode, values: unknown[], path: string): string[] {
    const mappings = values.filter(isMapping)
    if (schema.anyOf) {
      return schema.anyOf.flatMap((member) => {
        const type = (member.properties?.type as { const?: unknown } | undefined)?.const
        if (type === undefined) return unset(member, values, path)
        return unset(
          member,
          mappings.filter((value) => value.type === type),
          `${path}(type: ${type})`,
        )
      })
    }
    if (schema.properties) {
      return Object.entries(schema.properties).flatMap(([key, child]) => {
        const set = mappings.map((value) => value[key]).filter((value) => value !== undefined)
        return set.length === 0 ? [`${path}.${key}`] : unset(child, set, `${path}.${key}`)
      })
    }
    if (schema.patternProperties) {
      const child = Object.values(schema.patternProperties)[0]!
      const set = mappings.flatMap((value) => Object.values(value))
      return set.length === 0 ? [`${path}.*`] : unset(child, set, `${path}.*`)
    }
    return []
  }

  test('shows every setting the config schema accepts', () => {
    expect(unset(ConfigFileSchema as SchemaNode, [example], '')).toEqual([])
  })
})
