/**
 * The knobs every bench reads from the environment, so a quick look and a careful run are the
 * same script: BENCH_SECONDS (length of one measured run), BENCH_CONCURRENCY (workers of the
 * closed-loop maximum), BENCH_PROFILE (a folder: the gateway writes a CPU profile there).
 */
function positive(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0)
    throw new Error(`${name}: must be a positive number, got "${raw}"`)
  return value
}

export const benchSeconds = (fallback = 10) => positive('BENCH_SECONDS', fallback)
export const benchConcurrency = (fallback = 64) => positive('BENCH_CONCURRENCY', fallback)
export const profileDir = (): string | undefined => process.env.BENCH_PROFILE || undefined
