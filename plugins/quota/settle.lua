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
local window_count = (month_at - 7) / 2

if lease_id ~= '' then redis.call('ZREM', KEYS[2], lease_id) end

-- One HMGET and at most one HSET, as in admit.lua (each redis.call costs Redis' one thread
-- a few microseconds). `day` is written by every admission, so without it the hash is gone
-- (expired, or its limits reset) and nothing is recreated.
local fields = { 'day', 'tok:' .. day, 'cost:' .. day }
local month_deltas = {}
if month_at <= #ARGV then
  local user_field = 'cost:m:' .. ARGV[month_at + 1]
  fields[4] = user_field
  fields[5] = user_field .. ':k:' .. ARGV[month_at + 2]
  month_deltas = { tonumber(ARGV[month_at + 3]), tonumber(ARGV[month_at + 4]) }
end
local tats_at = #fields
if refund > 0 then
  for i = 1, window_count do fields[#fields + 1] = 'tat:' .. ARGV[5 + i * 2] end
end
local values = redis.call('HMGET', KEYS[1], unpack(fields))
if not values[1] then return 1 end

local writes = {}
local function add(at, delta)
  if delta == 0 then return end
  local value = (tonumber(values[at]) or 0) + delta
  if value < 0 then value = 0 end
  writes[#writes + 1] = fields[at]
  writes[#writes + 1] = value
end
add(2, token_delta)
add(3, cost_delta)
for i = 1, #month_deltas do
  if values[3 + i] then add(3 + i, month_deltas[i]) end
end
if refund > 0 then
  local now
  if ARGV[1] == '' then
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  else
    now = tonumber(ARGV[1])
  end
  for i = 1, window_count do
    local period = tonumber(ARGV[5 + i * 2])
    local limit = tonumber(ARGV[6 + i * 2])
    local tat = tonumber(values[tats_at + i])
    if limit > 0 and tat then
      writes[#writes + 1] = fields[tats_at + i]
      writes[#writes + 1] = math.max(now, tat - refund * period / limit)
    end
  end
end
if #writes > 0 then redis.call('HSET', KEYS[1], unpack(writes)) end
return 1
