#!lua flags=no-writes,allow-stale
-- counts: a consistent snapshot of a queue's sizes and counters.
--
-- KEYS[1]      meta       hash (paused)
-- KEYS[2]      stats      hash of counters
-- KEYS[3]      scheduled  sorted set
-- KEYS[4]      dead       sorted set
-- KEYS[5]      completed  sorted set
-- KEYS[6]      workers    sorted set
-- KEYS[7..16]  waiting    lists, priority 0..9
-- KEYS[17..]   active     hashes of the queue's workers
-- Returns: {waiting per priority (10 values), scheduled, active, dead,
-- completed, workers, paused (0/1), stats as a flat field/value array}.

local out = {}
for p = 0, 9 do out[#out + 1] = redis.call('LLEN', KEYS[7 + p]) end
out[#out + 1] = redis.call('ZCARD', KEYS[3])
local active = 0
for i = 17, #KEYS do active = active + redis.call('HLEN', KEYS[i]) end
out[#out + 1] = active
out[#out + 1] = redis.call('ZCARD', KEYS[4])
out[#out + 1] = redis.call('ZCARD', KEYS[5])
out[#out + 1] = redis.call('ZCARD', KEYS[6])
out[#out + 1] = redis.call('HEXISTS', KEYS[1], 'paused')
out[#out + 1] = redis.call('HGETALL', KEYS[2])
return out
