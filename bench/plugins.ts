/**
 * `bun run bench plugins`: where the overhead goes. The `overhead` load (1,000 req/s and
 * maximum) against several gateway processes side by side, each with plugins switched off
 * through their real `enabled` settings, all in front of one simulator, interleaved load by
 * load:
 * - all plugins on (as in `overhead`);
 * - each of quota, cache, ledger and breaker off in turn (`<plugin>.enabled: false`);
 * - all four off: what auth, routing, metrics and the relay cost alone;
 * - cache miss: cache on, every prompt unique and cacheable (`temperature: 0`, no `no-store`),
 *   so each request pays a lookup and a store: the cost of the cache on its miss path.
 */
import { added, compare, type LoadStep, latencyTable } from './lib/compare'
import { benchConcurrency, benchSeconds } from './lib/env'
import { startSim } from './lib/procs'
import { startRecording, table } from './lib/report'
import { allOn, directTarget, gatewayTarget, type Stack, startStack, type Variant } from './lib/setup'

const seconds = benchSeconds()
const concurrency = benchConcurrency()
const rates = [1000]
const recording = startRecording('plugins', 'plugins: the overhead with each plugin switched off in turn')

const variants: Variant[] = [
  allOn,
  { name: 'quota off', description: '`quota.enabled: false`', off: ['quota'] },
  { name: 'cache off', description: '`cache.enabled: false`', off: ['cache'] },
  { name: 'ledger off', description: '`ledger.enabled: false`', off: ['ledger'] },
  { name: 'breaker off', description: '`breaker.enabled: false`', off: ['breaker'] },
  {
    name: 'all four off',
    description: 'quota, cache, ledger and breaker: auth, routing, metrics and relay remain',
    off: ['quota', 'cache', 'ledger', 'breaker'],
  },
  {
    name: 'cache miss path',
    description: 'cache on; unique cacheable prompts: lookup + store each',
    cacheMiss: true,
  },
]

const sim = await startSim()
const stacks: Stack[] = []
let steps: LoadStep[]
try {
  for (const variant of variants) stacks.push(await startStack({ variant, sim }))
  steps = await compare(
    [
      { target: directTarget(sim), pid: sim.pid },
      ...stacks.map((stack, i) => ({
        target: gatewayTarget(stack.gateway, stack.key, variants[i], variants[i]!.name),
        pid: stack.gateway.pid,
      })),
    ],
    { rates, seconds, concurrency },
  )
} finally {
  for (const stack of stacks) await stack.close()
  await sim.stop()
}

const rows = added(steps)
const run = (load: string, target: string) =>
  steps.find((step) => step.load === load)?.runs.find((one) => one.target === target)
const allOnRun = (load: string) => run(load, allOn.name)
const maxLoad = steps.find((step) => step.load.startsWith('max'))?.load ?? ''
const attribution = variants.map((variant) => {
  const at1000 = rows.find((row) => row.load === '1000 req/s' && row.target === variant.name)
  const cpu = run('1000 req/s', variant.name)?.cpuUsPerRequest ?? 0
  const max = run(maxLoad, variant.name)?.achievedRate ?? 0
  const baseCpu = allOnRun('1000 req/s')?.cpuUsPerRequest ?? 0
  const baseMax = allOnRun(maxLoad)?.achievedRate ?? 0
  return [
    variant.name,
    variant.description,
    at1000 ? at1000.p50.toFixed(2) : '-',
    at1000 ? at1000.p99.toFixed(2) : '-',
    cpu,
    variant === allOn ? '-' : `${cpu - baseCpu >= 0 ? '+' : ''}${cpu - baseCpu}`,
    max,
    variant === allOn ? '-' : `${baseMax ? ((max / baseMax - 1) * 100).toFixed(0) : '?'}%`,
  ]
})
await recording.write(
  { rates, seconds, concurrency, variants, steps, added: rows },
  [
    `Each variant is its own gateway process (own throwaway database, shared Redis), all in front of one simulator; ${seconds} s per run, interleaved.`,
    table(
      [
        'variant',
        'switched off by',
        '+p50 ms at 1,000/s',
        '+p99 ms at 1,000/s',
        'gateway CPU µs/req',
        'CPU vs all on',
        `max req/s (${concurrency} workers)`,
        'max vs all on',
      ],
      attribution,
    ),
    'All runs:',
    latencyTable(steps),
  ].join('\n\n'),
)
