/**
 * Structured JSON logs, one line per event, filtered by LOG_LEVEL. Messages never carry
 * prompts, completions or keys: callers pass only identifiers and numbers as fields.
 */
import type { LogLevel } from './config'

const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 }
let threshold = order.info

export function setLogLevel(level: LogLevel): void {
  threshold = order[level]
}

function write(level: Exclude<LogLevel, 'silent'>, msg: string, fields?: Record<string, unknown>): void {
  if (order[level] < threshold) return
  const line = JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })
  if (order[level] >= order.warn) process.stderr.write(`${line}\n`)
  else process.stdout.write(`${line}\n`)
}

export const log = {
  debug: (msg: string, fields?: Record<string, unknown>) => write('debug', msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => write('info', msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => write('warn', msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => write('error', msg, fields),
}
