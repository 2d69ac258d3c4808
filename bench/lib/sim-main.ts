/**
 * Entry of the simulator process the benches start: `startSimServer` with options from
 * BENCH_SIM_OPTIONS (JSON). `bun run sim` cannot set the answer length (`maxTokens`), which the
 * stream runs need to get a fixed ~50-token answer; this entry passes every option through.
 */
import { type SimServerOptions, startSimServer } from '../../src/upstream/sim-server'

const options = JSON.parse(process.env.BENCH_SIM_OPTIONS ?? '{}') as SimServerOptions
const sim = await startSimServer({ ...options, hostname: '127.0.0.1' })
// The parent reads this line to learn the port.
console.log(`listening ${sim.port}`)
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.on(signal, () => void sim.stop().then(() => process.exit(0)))
