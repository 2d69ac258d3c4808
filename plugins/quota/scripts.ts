/**
 * The two quota scripts (admit.lua and settle.lua beside this file) and their in-memory
 * twins, monthly budget counters included. The twins implement the same algorithm line for line on the memory store, so the
 * embedded default and the Redis-down fallback enforce exactly what Redis would.
 */
import { defineStoreScript, type MemoryData } from '../store'

const dayMs = 86_400_000

type Fields = Record<string, number>
type Leases = Map<string, number>

function hashOf(data: MemoryData, key: string): Fields {
  let fields = data.get<Fields>(key)
  if (!fields) {
    fields = {}
    data.set(key, fields, 2 * dayMs)
  }
  return fields
}

function leasesOf(data: MemoryData, key: string): Leases {
  let leases = data.get<Leases>(key)
  if (!leases) {
    leases = new Map()
    data.set(key, leases)
  }
  return leases
}

/** The (period, limit) pairs from `offset` up to the optional month section. */
function windowsFrom(args: string[], offset: number): Array<{ period: number; limit: number }> {
  const windows = []
  for (let i = offset; i + 1 < args.length && args[i] !== 'month'; i += 2)
    windows.push({ period: Number(args[i]), limit: Number(args[i + 1]) })
  return windows
}

/** The arguments after the literal 'month' that follows the windows, or null without one. */
function monthArgs(args: string[], offset: number): string[] | null {
  for (let i = offset; i < args.length; i += 2) if (args[i] === 'month') return args.slice(i + 1)
  return null
}

/** The UTC month (yyyymm) of a day number and the day number the next month starts on. */
function monthOf(day: number): { month: number; nextMonthDay: number } {
  const date = new Date(day * dayMs)
  const [year, month] = [date.getUTCFullYear(), date.getUTCMonth()]
  return { month: year * 100 + month + 1, nextMonthDay: Date.UTC(year, month + 1, 1) / dayMs }
}

/** Whether a budget (0 = none) cannot take `reserve` more. */
const over = (limit: number, used: number, reserve: number) => limit > 0 && used + reserve > limit

export type AdmitReply = [number, string, number, number, number, number, number, ...number[]]

export const admitScript = defineStoreScript<AdmitReply>({
  name: 'tollgate_quota_admit',
  lua: await Bun.file(new URL('./admit.lua', import.meta.url)).text(),
  numberOfKeys: 2,
  runInMemory(data, [hashKey, leaseKey], args, clock) {
    const now = args[0] === '' ? clock : Number(args[0])
    const dryRun = args[1] === '1'
    const [leaseId, leaseTtl, weight, concurrentLimit, tokensLimit, tokensReserve, costLimit, costReserve] = [
      args[2]!,
      ...args.slice(3, 10).map(Number),
    ] as [string, number, number, number, number, number, number, number]
    const day = Math.floor(now / dayMs)
    const untilMidnight = (day + 1) * dayMs - now
    const fields = data.get<Fields>(hashKey!) ?? {}
    let tokensUsed = fields[`tok:${day}`] ?? 0
    let costUsed = fields[`cost:${day}`] ?? 0
    let deniedBy = ''
    let retryAfter = 0
    const deny = (name: string, wait: number) => {
      if (wait > retryAfter) {
        deniedBy = name
        retryAfter = wait
      }
    }
    const replyWindows: number[] = []
    const newTats: Array<number | undefined> = []
    const windows = windowsFrom(args, 10)
    windows.forEach(({ period, limit }, i) => {
      if (limit <= 0) {
        replyWindows.push(-1, 0)
        return
      }
      const interval = period / limit
      const tat = Math.max(fields[`tat:${period}`] ?? now, now)
      const newTat = tat + weight * interval
      const allowAt = newTat - period
      deny(`window:${i + 1}`, allowAt - now)
      const after = allowAt > now || dryRun ? tat : newTat
      newTats[i] = newTat
      replyWindows.push(Math.max(0, Math.floor((period - (after - now)) / interval)), Math.ceil(after - now))
    })
    if (over(tokensLimit, tokensUsed, tokensReserve)) deny('tokens', untilMidnight)
    if (over(costLimit, costUsed, costReserve)) deny('cost', untilMidnight)
    const monthly = monthArgs(args, 10)
    let month: { id: number; userField: string; keyField: string; reserve: number } | null = null
    let [userMonthLimit, keyMonthLimit, userMonthUsed, keyMonthUsed] = [0, 0, 0, 0]
    if (monthly) {
      const { month: id, nextMonthDay } = monthOf(day)
      const userField = `cost:m:${id}`
      const keyField = `${userField}:k:${monthly[0]}`
      const [reserve, userSeed, keySeed] = monthly.slice(3, 6).map(Number) as [number, number, number]
      ;[userMonthLimit, keyMonthLimit] = [Number(monthly[1]), Number(monthly[2])]
      if (userMonthLimit > 0) userMonthUsed = fields[userField] ?? userSeed
      if (keyMonthLimit > 0) keyMonthUsed = fields[keyField] ?? keySeed
      const untilMonthEnd = nextMonthDay * dayMs - now
      if (over(userMonthLimit, userMonthUsed, reserve)) deny('month_cost', untilMonthEnd)
      if (over(keyMonthLimit, keyMonthUsed, reserve)) deny('key_month_cost', untilMonthEnd)
      month = { id, userField, keyField, reserve }
    }
    const leases = leasesOf(data, leaseKey!)
    for (const [id, expiresAt] of leases) if (expiresAt <= now) leases.delete(id)
    let concurrentUsed = leases.size
    if (concurrentLimit > 0 && concurrentUsed >= concurrentLimit)
      deny('concurrent', Math.min(1000, Math.min(...leases.values()) - now))
    if (deniedBy === '' && !dryRun) {
      const hash = hashOf(data, hashKey!)
      if (hash.day !== undefined && hash.day !== day) {
        delete hash[`tok:${hash.day}`]
        delete hash[`cost:${hash.day}`]
      }
      windows.forEach(({ period }, i) => {
        if (newTats[i] !== undefined) hash[`tat:${period}`] = newTats[i]
      })
      tokensUsed += tokensReserve
      costUsed += costReserve
      Object.assign(hash, { day, [`tok:${day}`]: tokensUsed, [`cost:${day}`]: costUsed })
      if (month) {
        if (userMonthLimit > 0) hash[month.userField] = userMonthUsed += month.reserve
        else delete hash[month.userField]
        if (keyMonthLimit > 0) hash[month.keyField] = keyMonthUsed += month.reserve
        else delete hash[month.keyField]
      }
      data.expire(hashKey!, 2 * dayMs)
      if (concurrentLimit > 0) {
        leases.set(leaseId, now + leaseTtl)
        concurrentUsed++
      }
    }
    return [
      deniedBy === '' ? 1 : 0,
      deniedBy,
      Math.ceil(retryAfter),
      day,
      tokensUsed,
      costUsed,
      concurrentUsed,
      ...replyWindows,
      ...(month ? [month.id, userMonthUsed, keyMonthUsed] : []),
    ]
  },
})

export const settleScript = defineStoreScript<number>({
  name: 'tollgate_quota_settle',
  lua: await Bun.file(new URL('./settle.lua', import.meta.url)).text(),
  numberOfKeys: 2,
  runInMemory(data, [hashKey, leaseKey], args, clock) {
    const now = args[0] === '' ? clock : Number(args[0])
    const [leaseId, day] = [args[1]!, args[2]!]
    const [tokenDelta, costDelta, refund] = args.slice(3, 6).map(Number) as [number, number, number]
    if (leaseId !== '') data.get<Leases>(leaseKey!)?.delete(leaseId)
    const hash = data.get<Fields>(hashKey!)
    if (!hash) return 1
    const add = (field: string, delta: number) => {
      if (delta !== 0) hash[field] = Math.max(0, (hash[field] ?? 0) + delta)
    }
    add(`tok:${day}`, tokenDelta)
    add(`cost:${day}`, costDelta)
    const monthly = monthArgs(args, 6)
    if (monthly) {
      const userField = `cost:m:${monthly[0]}`
      const keyField = `${userField}:k:${monthly[1]}`
      if (userField in hash) add(userField, Number(monthly[2]))
      if (keyField in hash) add(keyField, Number(monthly[3]))
    }
    if (refund > 0) {
      for (const { period, limit } of windowsFrom(args, 6)) {
        const tat = hash[`tat:${period}`]
        if (limit > 0 && tat !== undefined)
          hash[`tat:${period}`] = Math.max(now, tat - (refund * period) / limit)
      }
    }
    return 1
  },
})
