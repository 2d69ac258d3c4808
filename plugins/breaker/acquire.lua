-- Asks a breaker that this instance believes is not closed for a probe slot.
-- KEYS[1]: the target's hash (see record.lua).
-- ARGV: now_ms, lease_ms (how long a probe holds its slot before it counts as lost, so a
-- crashed instance cannot keep a breaker half-open forever), max_probes, ttl_ms.
--
-- An OPEN breaker whose cool-down has passed becomes HALF_OPEN here, by whichever instance
-- asks first; every instance then competes for the same slots.
-- Returns {verdict (0 = rejected, 1 = probe admitted, 2 = closed: an ordinary call), field, value, ...}.

local key = KEYS[1]
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local max_probes = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])

local h = {}
local raw = redis.call('HGETALL', key)
for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
local function num(field) return tonumber(h[field]) or 0 end

local state = num('state')
if state == 0 then return { 2, unpack(raw) } end

local verdict = 0
if state == 1 and now >= num('open_until') then
  state = 2
  h.state = 2
  h.probes = 0
  h.successes = 0
end
if state == 2 then
  if num('probes') > 0 and now >= num('probe_until') then h.probes = 0 end
  if num('probes') < max_probes then
    h.probes = num('probes') + 1
    h.probe_until = math.max(num('probe_until'), now + lease)
    verdict = 1
  end
end

local flat = {}
for field, value in pairs(h) do
  flat[#flat + 1] = field
  flat[#flat + 1] = value
end
redis.call('HSET', key, unpack(flat))
redis.call('PEXPIRE', key, ttl)
return { verdict, unpack(flat) }
