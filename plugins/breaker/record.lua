-- Records the outcome of one call to a target and makes the transition it implies.
-- KEYS[1]: the target's hash ({b:<target>}): state, open_until, cooldown, opened_at, probes,
-- probe_until, successes, failure_at, failure, and the rolling window as a ring of buckets
-- (t<i> = bucket number, c<i> = calls, f<i> = failures), so the hash never grows.
--
-- ARGV: now_ms, outcome (s = success, f = failure, r = release: a probe that ended without a
-- verdict, e.g. its client went away), probe (1 = the call held a half-open probe slot),
-- reason (of a failure, for operators), window_ms, buckets, failure_threshold, failure_rate,
-- minimum_calls, cooldown_ms, max_cooldown_ms, success_threshold, ttl_ms.
--
-- CLOSED opens on enough failures (count or rate) within the window; only probes decide a
-- HALF_OPEN breaker: a failed one reopens it with the cool-down doubled, enough successes
-- close it with a fresh window. Outcomes of calls admitted before the breaker opened count
-- in the window but move nothing.
-- Returns {transition ('' | 'open' | 'closed'), field, value, ...}: the hash after the change.

local key = KEYS[1]
local now = tonumber(ARGV[1])
local outcome = ARGV[2]
local probe = ARGV[3] == '1'
local reason = ARGV[4]
local window = tonumber(ARGV[5])
local buckets = tonumber(ARGV[6])
local failure_threshold = tonumber(ARGV[7])
local failure_rate = tonumber(ARGV[8])
local minimum_calls = tonumber(ARGV[9])
local cooldown_base = tonumber(ARGV[10])
local cooldown_max = tonumber(ARGV[11])
local success_threshold = tonumber(ARGV[12])
local ttl = tonumber(ARGV[13])

local h = {}
local raw = redis.call('HGETALL', key)
for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
local function num(field) return tonumber(h[field]) or 0 end

local state = num('state')
local transition = ''
local bucket_ms = window / buckets
local current = math.floor(now / bucket_ms)

if outcome ~= 'r' then
  local slot = current % buckets
  if num('t' .. slot) ~= current then
    h['t' .. slot] = current
    h['c' .. slot] = 0
    h['f' .. slot] = 0
  end
  h['c' .. slot] = num('c' .. slot) + 1
  if outcome == 'f' then
    h['f' .. slot] = num('f' .. slot) + 1
    h.failure_at = now
    h.failure = reason
  end
end

local function open(cooldown)
  h.state = 1
  h.cooldown = cooldown
  h.opened_at = now
  h.open_until = now + cooldown
  h.probes = 0
  h.successes = 0
  transition = 'open'
end

if state == 0 and outcome == 'f' then
  local calls, failures = 0, 0
  for i = 0, buckets - 1 do
    if num('t' .. i) > current - buckets then
      calls = calls + num('c' .. i)
      failures = failures + num('f' .. i)
    end
  end
  if (failure_threshold > 0 and failures >= failure_threshold)
    or (failure_rate > 0 and calls >= minimum_calls and failures >= failure_rate * calls) then
    open(cooldown_base)
  end
elseif state == 2 and probe then
  h.probes = math.max(0, num('probes') - 1)
  if outcome == 'f' then
    open(math.min(math.max(num('cooldown'), cooldown_base) * 2, cooldown_max))
  elseif outcome == 's' then
    h.successes = num('successes') + 1
    if h.successes >= success_threshold then
      -- A fresh window: failures from before the outage must not reopen it at once.
      h = { state = 0, failure_at = h.failure_at, failure = h.failure }
      redis.call('DEL', key)
      transition = 'closed'
    end
  end
end

local flat = {}
for field, value in pairs(h) do
  flat[#flat + 1] = field
  flat[#flat + 1] = value
end
redis.call('HSET', key, unpack(flat))
redis.call('PEXPIRE', key, ttl)
return { transition, unpack(flat) }
