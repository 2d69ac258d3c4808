/**
 * `bun run bench peer`: tollgate next to another open-source gateway, the Portkey AI gateway
 * (Node.js), both in front of the same simulator process, under the same loads as `overhead`,
 * interleaved load by load. tollgate runs with every plugin on (Redis, Postgres, quota, cache
 * bypassed by `no-store`, ledger, breaker); Portkey runs as installed, with no config: a
 * pass-through proxy. Targets (issue 8): tollgate's throughput at least 10x Portkey's, and its
 * added p99 at most 1/20 of Portkey's.
 */
import { added, addedTable, compare, latencyTable } from './lib/compare'
import { benchConcurrency, benchSeconds } from './lib/env'
import { nodeVersion, PORTKEY_VERSION, portkeyTarget, startPortkey } from './lib/portkey'
import { startRecording, table } from './lib/report'
import { directTarget, gatewayTarget, startStack } from './lib/setup'

const seconds = benchSeconds()
const concurrency = benchConcurrency()
const rates = [500, 1000, 2000]
const node = nodeVersion()
const recording = startRecording('peer', `peer: tollgate vs Portkey gateway ${PORTKEY_VERSION}`)

const stack = await startStack()
const portkey = await startPortkey().catch(async (error) => {
  await stack.close()
  throw error
})
let steps: Awaited<ReturnType<typeof compare>>
try {
  steps = await compare(
    [
      { target: directTarget(stack.sim), pid: stack.sim.pid },
      { target: gatewayTarget(stack.gateway, stack.key), pid: stack.gateway.pid },
      { target: portkeyTarget(portkey, stack.sim.url), pid: portkey.pid },
    ],
    { rates, seconds, concurrency },
  )
} finally {
  await portkey.stop()
  await stack.close()
}

const rows = added(steps)
/** Side by side per load: tollgate's added latency and throughput against Portkey's. */
const sideBySide = [...new Set(rows.map((row) => row.load))].map((load) => {
  const ours = rows.find((row) => row.load === load && row.target === 'tollgate')
  const theirs = rows.find((row) => row.load === load && row.target === 'portkey')
  const step = steps.find((s) => s.load === load)
  const rate = (name: string) => step?.runs.find((run) => run.target === name)?.achievedRate ?? 0
  const ratio = (a = 0, b = 0) => (b > 0 ? (a / b).toFixed(2) : 'n/a')
  return {
    load,
    tollgateP99: ours?.p99 ?? 0,
    portkeyP99: theirs?.p99 ?? 0,
    p99Share: ratio(ours?.p99, theirs?.p99),
    tollgateRate: rate('tollgate'),
    portkeyRate: rate('portkey'),
    throughputRatio: ratio(rate('tollgate'), rate('portkey')),
  }
})
const max = sideBySide.find((row) => row.load.startsWith('max'))
const at1000 = sideBySide.find((row) => row.load === '1000 req/s')
const verdicts = [
  max
    ? `- throughput at maximum: tollgate ${max.tollgateRate} req/s, Portkey ${max.portkeyRate} req/s: ${max.throughputRatio}x (target >= 10x): ${Number(max.throughputRatio) >= 10 ? 'met' : 'missed'}`
    : '',
  at1000
    ? `- added p99 at 1,000 req/s: tollgate ${at1000.tollgateP99.toFixed(2)} ms, Portkey ${at1000.portkeyP99.toFixed(2)} ms: ratio ${at1000.p99Share} (target <= 0.05): ${Number(at1000.p99Share) <= 0.05 ? 'met' : 'missed'}`
    : '',
]
await recording.write(
  { rates, seconds, concurrency, portkeyVersion: PORTKEY_VERSION, node, steps, added: rows, sideBySide },
  [
    `Same simulator, same request (8-token answer), open model at each rate for ${seconds} s, then ${concurrency} closed-loop workers. Portkey ${PORTKEY_VERSION} on Node ${node} with headers \`x-portkey-provider: openai\`, \`x-portkey-custom-host\`.`,
    latencyTable(steps),
    'Added latency over direct, per gateway:',
    addedTable(rows),
    'Side by side:',
    table(
      [
        'load',
        'tollgate +p99 ms',
        'Portkey +p99 ms',
        'tollgate/Portkey p99',
        'tollgate req/s',
        'Portkey req/s',
        'throughput ratio',
      ],
      sideBySide.map((row) => [
        row.load,
        row.tollgateP99.toFixed(2),
        row.portkeyP99.toFixed(2),
        row.p99Share,
        row.tollgateRate,
        row.portkeyRate,
        row.throughputRatio,
      ]),
    ),
    verdicts.filter(Boolean).join('\n'),
  ].join('\n\n'),
)
