-- Reads a target's breaker hash (see record.lua) for the background refresh.
-- KEYS[1]: the target's hash. Returns {field, value, ...}, empty when the breaker is closed and idle.
return redis.call('HGETALL', KEYS[1])
