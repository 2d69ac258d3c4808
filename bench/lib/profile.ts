/**
 * Summarises a V8/JSC `.cpuprofile` (what `bun --cpu-prof` writes) by samples rather than by
 * time: Bun's profile charts idle gaps to whatever ran last, so on a half-idle gateway the
 * time columns mislead, while sample counts are the CPU actually spent. Answers the functions
 * with the most self samples and the share of samples per source area (src/, plugins/,
 * node_modules packages, native), which is what bench/README.md reports.
 *
 * `bun bench/lib/profile.ts <file.cpuprofile>` prints the summary as Markdown.
 */

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}

interface CpuProfile {
  nodes: ProfileNode[]
  samples: number[]
}

export interface ProfileSummary {
  samples: number
  /** Self samples per function (name + location), most first. */
  hot: Array<{ fn: string; where: string; samples: number; share: number }>
  /** Self samples per area: `src/...`, `plugins/<name>`, a package, `native`. */
  areas: Array<{ area: string; samples: number; share: number }>
  /** Samples in native code, charged to the native function and its nearest JS caller. */
  native: Array<{ fn: string; caller: string; samples: number; share: number }>
}

function area(url: string): string {
  if (!url) return 'native / runtime'
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (modules) return `package ${modules[1]}`
  const own = /\/(src|plugins|db)\/([^/]+)/.exec(url)
  if (own) return own[1] === 'plugins' ? `plugins/${own[2]}` : `${own[1]}/${own[2]}`
  if (url.startsWith('node:') || url.startsWith('bun:')) return 'Bun built-ins (node:, bun:)'
  return url
}

export function summarizeProfile(profile: CpuProfile, top = 25): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  /** The nearest ancestor with a source location: who called into native code. */
  const jsCaller = (id: number): string => {
    for (let at = parent.get(id); at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)?.callFrame
      if (frame?.url)
        return `${frame.functionName || '(anonymous)'} (${frame.url.replace(/^.*\/work\/main\//, '')}:${frame.lineNumber + 1})`
    }
    return '(none)'
  }
  const native = new Map<string, { fn: string; caller: string; samples: number }>()
  const self = new Map<number, number>()
  for (const id of profile.samples) self.set(id, (self.get(id) ?? 0) + 1)
  const total = profile.samples.length
  const fns = new Map<string, { fn: string; where: string; samples: number }>()
  const areas = new Map<string, number>()
  for (const [id, count] of self) {
    const node = byId.get(id)
    if (!node) continue
    const { functionName, url, lineNumber } = node.callFrame
    const name = functionName || '(anonymous)'
    if (name === '(idle)' || name === '(program)') continue
    const where = url ? `${url.replace(/^.*\/work\/main\//, '')}:${lineNumber + 1}` : '[native]'
    const key = `${name}@${where}`
    const entry = fns.get(key) ?? { fn: name, where, samples: 0 }
    entry.samples += count
    fns.set(key, entry)
    if (!url) {
      const caller = jsCaller(id)
      const entry = native.get(`${name}<${caller}`) ?? { fn: name, caller, samples: 0 }
      entry.samples += count
      native.set(`${name}<${caller}`, entry)
    }
    const group = area(url)
    areas.set(group, (areas.get(group) ?? 0) + count)
  }
  const busy = [...areas.values()].reduce((sum, n) => sum + n, 0) || 1
  const share = (n: number) => Math.round((n / busy) * 1000) / 10
  return {
    samples: total,
    hot: [...fns.values()]
      .sort((a, b) => b.samples - a.samples)
      .slice(0, top)
      .map((entry) => ({ ...entry, share: share(entry.samples) })),
    native: [...native.values()]
      .sort((a, b) => b.samples - a.samples)
      .slice(0, top)
      .map((entry) => ({ ...entry, share: share(entry.samples) })),
    areas: [...areas.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([name, samples]) => ({ area: name, samples, share: share(samples) })),
  }
}

export function profileMarkdown(summary: ProfileSummary): string {
  const areas = summary.areas
    .slice(0, 15)
    .map((row) => `| ${row.area} | ${row.samples} | ${row.share}% |`)
    .join('\n')
  const hot = summary.hot
    .map((row) => `| \`${row.fn}\` | ${row.where} | ${row.samples} | ${row.share}% |`)
    .join('\n')
  const native = summary.native
    .map((row) => `| \`${row.fn}\` | ${row.caller} | ${row.samples} | ${row.share}% |`)
    .join('\n')
  return [
    '| area | self samples | share of busy samples |',
    '| --- | --- | --- |',
    areas,
    '',
    '| function | where | self samples | share |',
    '| --- | --- | --- | --- |',
    hot,
    '',
    '| native function | nearest JS caller | samples | share |',
    '| --- | --- | --- | --- |',
    native,
  ].join('\n')
}

if (import.meta.main) {
  const path = process.argv[2]
  if (!path) throw new Error('usage: bun bench/lib/profile.ts <file.cpuprofile>')
  const profile = (await Bun.file(path).json()) as CpuProfile
  console.log(profileMarkdown(summarizeProfile(profile)))
}
