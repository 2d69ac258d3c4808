-- Records the outcome of one call to a target and makes the transition it implies.
-- KEYS[1]: the target's hash ({b:<target>}): state, open_until, cooldown, opened_at, probes,
-- probe_until, successes, failure_at, failure, and the rolling window as a ring of buckets
-- (t<i> = bucket number, c<i> = calls, f<i> = failures), so the hash never grows.
--
-- ARGV: now_ms, outcome (s = success, f = failure, r = release: a probe that ended without a
-- verdict, e.g. its client went away; n = none: only the batched successes below), probe (1 =
-- the call held a half-open probe slot), reason (of a failure, for operators), window_ms,
-- buckets, failure_threshold, failure_rate, minimum_calls, cooldown_ms, max_cooldown_ms,
-- success_threshold, ttl_ms, batched (successes of earlier calls not sent yet), batched_at
-- (when they happened: all within one bucket).
--
-- Why successes are batched, and how stale that leaves the shared window: a success in a
-- closed breaker moves nothing, so an instance counts it on its own copy at once and sends
-- the count later, with its next write or its next sync (every sync_interval_ms, 500 by
-- default), whichever comes first, and at the latest when a success falls into a new bucket.
-- Every failure this instance sends carries its own unsent successes, so a failure is always
-- judged here on every outcome of the instance that saw it, and on every failure of every
-- instance (failures are never batched). What the window may lack is the other instances'
-- successes of their last sync interval: the failure rate here can only read high, never
-- low (the breaker errs toward opening), by at most the share of the window's calls those
-- are: about sync_interval / window_ms (500 ms of a 60 s window: under 1%) at a steady
-- rate. The count rule (failure_threshold) counts failures only and is exact. Batched
-- successes land in the bucket they happened in (batched_at), or nowhere once it has left
-- the window.
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
local batched = tonumber(ARGV[14])
local batched_at = tonumber(ARGV[15])

local h = {}
local raw = redis.call('HGETALL', key)
for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
local function num(field) return tonumber(h[field]) or 0 end

local state = num('state')
local transition = ''
local bucket_ms = window / buckets
local current = math.floor(now / bucket_ms)

-- Adds calls to the bucket numbered `bucket`, unless it has left the window.
local function count(bucket, calls)
  if bucket <= current - buckets then return end
  local slot = bucket % buckets
  if num('t' .. slot) ~= bucket then
    h['t' .. slot] = bucket
    h['c' .. slot] = 0
    h['f' .. slot] = 0
  end
  h['c' .. slot] = num('c' .. slot) + calls
end

if batched > 0 then count(math.min(current, math.floor(batched_at / bucket_ms)), batched) end
if outcome == 's' or outcome == 'f' then
  count(current, 1)
  if outcome == 'f' then
    local slot = current % buckets
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
