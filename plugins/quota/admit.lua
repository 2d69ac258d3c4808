-- Atomic check-and-reserve over every limit of one scope (a user, or the whole gateway).
-- KEYS[1]: the scope's hash (GCRA arrival times, daily token and cost counters)
-- KEYS[2]: the scope's concurrency leases (sorted set: member = lease id, score = expiry ms)
-- Both keys carry the same hash tag ({u:<user>} or {global}), so this runs on one cluster node.
--
-- ARGV: now_ms ('' = the Redis server's TIME, one clock for every instance), dry_run (1 = peek),
-- lease_id, lease_ttl_ms, weight, concurrent_limit, tokens_limit, tokens_reserve,
-- cost_limit, cost_reserve, then (period_ms, limit) per request window. A limit of 0 is unlimited.
-- Then, for a user scope with monthly budgets (the cost plugin's), optionally: the literal
-- 'month', key_id, user_month_limit, key_month_limit, month_reserve, user_month_seed, key_month_seed.
--
-- Request windows use GCRA: one arrival time per window, exact (no approximation at window
-- edges, unlike a sliding-window counter), and the retry time it gives is exact too. A window
-- of q requests per w ms admits a burst of q, then one request every w/q ms.
--
-- Every limit is checked before anything is written, so a denial leaves nothing reserved.
-- When several limits deny, the reply names the one that frees last: Retry-After then tells
-- the truth, instead of sending the client back into a limit already known to be full.
--
-- Monthly budgets are UTC calendar months, derived here from the same `now` as the day, so
-- both roll over at the same instant on every instance. A month's spend is the field
-- `cost:m:<yyyymm>` (and `cost:m:<yyyymm>:k:<key_id>` per key). A missing field starts from
-- the seed, the ledger's month-to-date spend, so a budget set mid-month, or a Redis that lost
-- its data, still counts what was already spent. An admitted request without a budget removes
-- its month fields, so a budget set again later starts from the ledger, not from a counter
-- that stopped counting in between (only when they exist: HMGET read them already, and most
-- users have no budget, so most admissions skip that HDEL).
-- Returns {admitted, denied_by, retry_after_ms, day, tokens_used, cost_used, concurrent_used,
--          remaining_1, reset_ms_1, remaining_2, reset_ms_2, ...}, then with a month section
--          month (yyyymm), user_month_used, key_month_used.

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local dry_run = ARGV[2] == '1'
local lease_id = ARGV[3]
local lease_ttl = tonumber(ARGV[4])
local weight = tonumber(ARGV[5])
local concurrent_limit = tonumber(ARGV[6])
local tokens_limit = tonumber(ARGV[7])
local tokens_reserve = tonumber(ARGV[8])
local cost_limit = tonumber(ARGV[9])
local cost_reserve = tonumber(ARGV[10])
local day = math.floor(now / 86400000)
local until_midnight = (day + 1) * 86400000 - now

local tokens_field = 'tok:' .. day
local cost_field = 'cost:' .. day

-- UTC year and month of a day number, and the day number the next month starts on (the
-- civil-from-days conversion of Howard Hinnant's date algorithms: Lua has no calendar).
local function month_of(day_number)
  local z = day_number + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day_of_month = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  local lengths = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  local length = lengths[m]
  if m == 2 and ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) then length = 29 end
  return y * 100 + m, day_number - day_of_month + 1 + length
end

local month_at = #ARGV + 1
for i = 11, #ARGV, 2 do
  if ARGV[i] == 'month' then
    month_at = i
    break
  end
end
local window_count = (month_at - 11) / 2

-- Every field this scope needs, read in one HMGET and written in one HSET: inside a script
-- each redis.call costs a few microseconds of Redis' single thread, several times a plain
-- command, and this script runs twice per request (user and global scope).
local month, next_month_day, user_month_field, key_month_field
local fields = { 'day', tokens_field, cost_field }
for i = 1, window_count do fields[#fields + 1] = 'tat:' .. ARGV[9 + i * 2] end
if month_at <= #ARGV then
  month, next_month_day = month_of(day)
  user_month_field = 'cost:m:' .. month
  key_month_field = user_month_field .. ':k:' .. ARGV[month_at + 1]
  fields[#fields + 1] = user_month_field
  fields[#fields + 1] = key_month_field
end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))
local tokens_used = tonumber(stored[2]) or 0
local cost_used = tonumber(stored[3]) or 0

local denied_by = ''
local retry_after = 0
-- Of every limit that denies, the one that frees last is named (see above).
local function deny(name, wait)
  if wait > retry_after then
    denied_by = name
    retry_after = wait
  end
end
-- Whether a budget (0 = none) cannot take `reserve` more.
local function over(limit, used, reserve)
  return limit > 0 and used + reserve > limit
end
local reply_windows = {}
local new_tats = {}
for i = 1, window_count do
  local period = tonumber(ARGV[9 + i * 2])
  local limit = tonumber(ARGV[10 + i * 2])
  if limit > 0 then
    local interval = period / limit
    local tat = tonumber(stored[3 + i]) or now
    if tat < now then tat = now end
    local new_tat = tat + weight * interval
    local allow_at = new_tat - period
    deny('window:' .. i, allow_at - now)
    local after = new_tat
    if allow_at > now or dry_run then after = tat end
    new_tats[i] = new_tat
    reply_windows[#reply_windows + 1] = math.max(0, math.floor((period - (after - now)) / interval))
    reply_windows[#reply_windows + 1] = math.ceil(after - now)
  else
    reply_windows[#reply_windows + 1] = -1
    reply_windows[#reply_windows + 1] = 0
  end
end

if over(tokens_limit, tokens_used, tokens_reserve) then deny('tokens', until_midnight) end
if over(cost_limit, cost_used, cost_reserve) then deny('cost', until_midnight) end

local spent_at = 3 + window_count
local user_month_limit, key_month_limit, month_reserve = 0, 0, 0
local user_month_used, key_month_used = 0, 0
if month then
  user_month_limit = tonumber(ARGV[month_at + 2])
  key_month_limit = tonumber(ARGV[month_at + 3])
  month_reserve = tonumber(ARGV[month_at + 4])
  if user_month_limit > 0 then user_month_used = tonumber(stored[spent_at + 1]) or tonumber(ARGV[month_at + 5]) end
  if key_month_limit > 0 then key_month_used = tonumber(stored[spent_at + 2]) or tonumber(ARGV[month_at + 6]) end
  local until_month_end = next_month_day * 86400000 - now
  if over(user_month_limit, user_month_used, month_reserve) then deny('month_cost', until_month_end) end
  if over(key_month_limit, key_month_used, month_reserve) then deny('key_month_cost', until_month_end) end
end

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local concurrent_used = redis.call('ZCARD', KEYS[2])
if concurrent_limit > 0 and concurrent_used >= concurrent_limit then
  local earliest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  deny('concurrent', math.min(1000, tonumber(earliest[2]) - now))
end

if denied_by == '' and not dry_run then
  if stored[1] and tonumber(stored[1]) ~= day then
    redis.call('HDEL', KEYS[1], 'tok:' .. stored[1], 'cost:' .. stored[1])
  end
  tokens_used = tokens_used + tokens_reserve
  cost_used = cost_used + cost_reserve
  local writes = { 'day', day, tokens_field, tokens_used, cost_field, cost_used }
  for i = 1, window_count do
    if new_tats[i] then
      writes[#writes + 1] = 'tat:' .. ARGV[9 + i * 2]
      writes[#writes + 1] = new_tats[i]
    end
  end
  local unbudgeted = {}
  if month then
    if user_month_limit > 0 then
      user_month_used = user_month_used + month_reserve
      writes[#writes + 1] = user_month_field
      writes[#writes + 1] = user_month_used
    elseif stored[spent_at + 1] then
      unbudgeted[#unbudgeted + 1] = user_month_field
    end
    if key_month_limit > 0 then
      key_month_used = key_month_used + month_reserve
      writes[#writes + 1] = key_month_field
      writes[#writes + 1] = key_month_used
    elseif stored[spent_at + 2] then
      unbudgeted[#unbudgeted + 1] = key_month_field
    end
  end
  redis.call('HSET', KEYS[1], unpack(writes))
  if #unbudgeted > 0 then redis.call('HDEL', KEYS[1], unpack(unbudgeted)) end
  redis.call('PEXPIRE', KEYS[1], 172800000)
  if concurrent_limit > 0 then
    redis.call('ZADD', KEYS[2], now + lease_ttl, lease_id)
    redis.call('PEXPIRE', KEYS[2], lease_ttl)
    concurrent_used = concurrent_used + 1
  end
end

local admitted = 0
if denied_by == '' then admitted = 1 end
local reply = { admitted, denied_by, math.ceil(retry_after), day, tokens_used, cost_used, concurrent_used }
for i = 1, #reply_windows do reply[#reply + 1] = reply_windows[i] end
if month then
  reply[#reply + 1] = month
  reply[#reply + 1] = user_month_used
  reply[#reply + 1] = key_month_used
end
return reply
