/**
 * A strict parser of the Prometheus text exposition format (0.0.4), so tests read `/metrics`
 * the way Prometheus does instead of searching it for strings. It throws on anything a
 * scraper would reject or that breaks the format's rules: a malformed line, a sample of an
 * undeclared or misnamed family, a duplicate series, a negative counter, a histogram whose
 * buckets are not cumulative or whose `+Inf` bucket differs from its count.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'

export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

export interface Family {
  name: string
  type: MetricType
  help: string
  samples: Sample[]
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const types = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped'])
const suffixes: Record<MetricType, string[]> = {
  counter: [''],
  gauge: [''],
  untyped: [''],
  histogram: ['_bucket', '_sum', '_count'],
  summary: ['', '_sum', '_count'],
}

function parseValue(text: string, line: string): number {
  if (text === '+Inf') return Infinity
  if (text === '-Inf') return -Infinity
  if (text === 'NaN') return NaN
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value in: ${line}`)
  return Number(text)
}

/** Parses `{a="x",b="y\"z"}` starting at `at`; returns the labels and the index after `}`. */
function parseLabels(line: string, at: number): [Record<string, string>, number] {
  const labels: Record<string, string> = {}
  let i = at + 1
  while (line[i] !== '}') {
    const name = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i))?.[0]
    if (!name || line[i + name.length] !== '=' || line[i + name.length + 1] !== '"')
      throw new Error(`bad label in: ${line}`)
    i += name.length + 2
    let value = ''
    while (line[i] !== '"') {
      if (i >= line.length) throw new Error(`unterminated label value in: ${line}`)
      if (line[i] === '\\') {
        const escaped = line[i + 1]
        if (escaped === 'n') value += '\n'
        else if (escaped === '\\' || escaped === '"') value += escaped
        else throw new Error(`bad escape in: ${line}`)
        i += 2
      } else value += line[i++]
    }
    if (name in labels) throw new Error(`label ${name} twice in: ${line}`)
    labels[name] = value
    i++
    if (line[i] === ',') i++
    else if (line[i] !== '}') throw new Error(`expected , or } in: ${line}`)
  }
  return [labels, i + 1]
}

function familyOf(families: Map<string, Family>, name: string): Family | undefined {
  for (const [familyName, family] of families) {
    for (const suffix of suffixes[family.type]) if (name === familyName + suffix) return family
  }
  return undefined
}

function checkHistogram(family: Family): void {
  const series = new Map<string, Sample[]>()
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels
    const key = JSON.stringify(Object.entries(rest).sort())
    if (!series.has(key)) series.set(key, [])
    series.get(key)!.push(sample)
  }
  for (const samples of series.values()) {
    const buckets = samples.filter((s) => s.name.endsWith('_bucket'))
    const count = samples.find((s) => s.name.endsWith('_count'))
    if (!count || !samples.some((s) => s.name.endsWith('_sum')))
      throw new Error(`${family.name}: no _sum/_count`)
    const bounds = buckets.map((b) => parseValue(b.labels.le ?? '', family.name))
    if (bounds.at(-1) !== Infinity) throw new Error(`${family.name}: no +Inf bucket`)
    for (let i = 1; i < buckets.length; i++) {
      if (bounds[i]! <= bounds[i - 1]!) throw new Error(`${family.name}: buckets out of order`)
      if (buckets[i]!.value < buckets[i - 1]!.value) throw new Error(`${family.name}: buckets not cumulative`)
    }
    if (buckets.at(-1)!.value !== count.value) throw new Error(`${family.name}: +Inf bucket != count`)
  }
}

export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>()
  const seen = new Set<string>()
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline')
  for (const line of text.split('\n')) {
    if (line === '') continue
    if (line.startsWith('#')) {
      const [, keyword, name, ...rest] = line.split(' ')
      if (keyword !== 'HELP' && keyword !== 'TYPE') continue
      if (!name || !metricName.test(name)) throw new Error(`bad metric name in: ${line}`)
      const family = families.get(name) ?? { name, type: 'untyped' as MetricType, help: '', samples: [] }
      if (keyword === 'HELP') family.help = rest.join(' ')
      else {
        const type = rest[0] as MetricType
        if (!types.has(type) || family.samples.length > 0) throw new Error(`bad TYPE line: ${line}`)
        family.type = type
      }
      families.set(name, family)
      continue
    }
    const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0]
    if (!name) throw new Error(`bad sample line: ${line}`)
    let labels: Record<string, string> = {}
    let rest = line.slice(name.length)
    if (rest.startsWith('{')) {
      const [parsed, end] = parseLabels(line, name.length)
      labels = parsed
      rest = line.slice(end)
    }
    const fields = rest.trim().split(/\s+/)
    if (!rest.startsWith(' ') || fields.length < 1 || fields.length > 2)
      throw new Error(`bad sample line: ${line}`)
    const value = parseValue(fields[0]!, line)
    for (const label of Object.keys(labels)) if (!labelName.test(label)) throw new Error(`bad label: ${line}`)
    const family = familyOf(families, name)
    if (!family) throw new Error(`sample of an undeclared family: ${line}`)
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (seen.has(key)) throw new Error(`duplicate series: ${line}`)
    seen.add(key)
    if (family.type === 'counter' && !(value >= 0)) throw new Error(`counter below zero: ${line}`)
    if (family.type === 'counter' && !name.endsWith('_total'))
      throw new Error(`counter without _total: ${line}`)
    family.samples.push({ name, labels, value })
  }
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family)
  return families
}

/** The value of one series, or undefined when it is not exposed. */
export function sampleValue(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const family of families.values()) {
    for (const sample of family.samples) {
      if (sample.name !== name) continue
      const keys = Object.keys(sample.labels)
      if (keys.length === Object.keys(labels).length && keys.every((k) => sample.labels[k] === labels[k]))
        return sample.value
    }
  }
  return undefined
}
