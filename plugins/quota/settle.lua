-- Reconciles one reservation of one scope with what the request actually used.
-- KEYS[1]: the scope's hash; KEYS[2]: its concurrency leases (same hash tag as admit.lua).
-- ARGV: now_ms ('' = Redis TIME), lease_id, day (of the reservation), token_delta, cost_delta,
-- refund_weight (requests given back to every window), then (period_ms, limit) per window,
-- then optionally 'month', month (yyyymm, of the reservation), key_id, user_month_delta,
-- key_month_delta: monthly budget counters that admit.lua reserved on.
--
-- Deltas apply to the day the reservation was made, so a request that crosses midnight
-- is neither refunded into the new day nor charged twice (months likewise). Counters never go
-- below zero, and a month counter that is gone (its budget was removed) is not recreated.

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local lease_id = ARGV[2]
local day = ARGV[3]
local token_delta = tonumber(ARGV[4])
local cost_delta = tonumber(ARGV[5])
local refund = tonumber(ARGV[6])
local month_at = #ARGV + 1
for i = 7, #ARGV, 2 do
  if ARGV[i] == 'month' then
    month_at = i
    break
  end
end

if lease_id ~= '' then redis.call('ZREM', KEYS[2], lease_id) end

local function add(field, delta)
  if delta == 0 then return end
  local value = (tonumber(redis.call('HGET', KEYS[1], field)) or 0) + delta
  if value < 0 then value = 0 end
  redis.call('HSET', KEYS[1], field, value)
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  add('tok:' .. day, token_delta)
  add('cost:' .. day, cost_delta)
  if month_at <= #ARGV then
    local user_field = 'cost:m:' .. ARGV[month_at + 1]
    local key_field = user_field .. ':k:' .. ARGV[month_at + 2]
    if redis.call('HEXISTS', KEYS[1], user_field) == 1 then add(user_field, tonumber(ARGV[month_at + 3])) end
    if redis.call('HEXISTS', KEYS[1], key_field) == 1 then add(key_field, tonumber(ARGV[month_at + 4])) end
  end
  if refund > 0 then
    for i = 1, (month_at - 7) / 2 do
      local period = tonumber(ARGV[5 + i * 2])
      local limit = tonumber(ARGV[6 + i * 2])
      local field = 'tat:' .. period
      local tat = tonumber(redis.call('HGET', KEYS[1], field))
      if limit > 0 and tat then
        redis.call('HSET', KEYS[1], field, math.max(now, tat - refund * period / limit))
      end
    end
  end
end
return 1
