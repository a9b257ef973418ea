#!lua
-- reserve_ids: hands a producer a run of fresh job ids, and records the run.
--
-- Producers take ids before they write a batch, so that the batch's records
-- can go to Redis as a plain HSET (see enqueue.lua) instead of through Lua.
-- A producer reserves a run at a time and uses it up over several batches,
-- so ids are unique but not in enqueue order across producers; ids left
-- unused when a producer stops are skipped, never given out again.
--
-- Each run gets a key of its own, `id_run:<token>:<generation>` (the
-- producer's random token and its count of reservations, so no two runs
-- ever share a name), written in the same step as next_id. A failover to a
-- replica that never received this call loses both together (replication
-- keeps order), and so does a restart that lost it: then a fresh
-- reservation may hand out this run's ids again, while the producer still
-- holds them in memory. Every batch is therefore sent as WATCH of its run's
-- key, `SET key 1 NX`, then its MULTI/EXEC (see queue/enqueue/writer.rs): when the key
-- is gone the SET makes it, the watched key has changed, and Redis does not
-- run the transaction, so a producer never writes over another's records.
-- The run is also recorded in `id_runs` (producer token -> last id), whose
-- top keeps next_id above every run a producer may still be writing.
--
-- No allow-oom flag: a full Redis refuses it, and the producer learns that
-- before it sends any record.
--
-- KEYS[1]      meta      hash; next_id is the last id given out; created_at
-- KEYS[2]      id_runs   sorted set, producer token -> last id of its run
-- KEYS[3]      id_run    this run's key (string, the run's last id)
-- KEYS[4]      id_run    the key of an older run of the producer's, one
--                        whose batches were all sent (ID_RUN_KEYS_KEPT back
--                        in queue/enqueue/writer.rs); deleted: a batch of it sent again
--                        after this finds it gone and takes new ids
-- ARGV[1]      n, the number of ids wanted (1..1000000)
-- ARGV[2]      the producer's token
-- ARGV[3]      the most runs id_runs keeps (the oldest are dropped)
-- ARGV[4]      now (ms), the queue's created_at if it has none
-- ARGV[5]      the run key's TTL (ms)
-- Returns: the last id of the run; the run is (last - n + 1) .. last.

local n = tonumber(ARGV[1])
if not n or n < 1 or n > 1000000 then
  return redis.error_reply('ERR plimsoll reserve_ids: bad count ' .. tostring(ARGV[1]))
end
local max_runs = tonumber(ARGV[3])

-- Ids start at 1,000,001: from there to 10^14 every id has 7 to 14 digits
-- and Redis keeps each the same way (a field name or set member of up to 14
-- characters is one 16-byte allocation), so a stored job costs the same
-- memory for the queue's whole life. Counting from 1, every id stored after
-- the millionth job took 8 bytes more than before it (measured: +1.8% of
-- used_memory for a queue holding its 10,000 dead jobs). A queue made before
-- this jumps ahead once; ids only ever grow, so none is reused.
local ID_FLOOR = 1000000
-- Never below a run recorded here: a meta hash deleted on its own (by
-- hand) must not send next_id back onto ids a producer still writes.
local floor = ID_FLOOR
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if top[2] and tonumber(top[2]) > floor then
  floor = tonumber(top[2])
end
local last = redis.call('HINCRBY', KEYS[1], 'next_id', n)
if last - n < floor then
  last = floor + n
  redis.call('HSET', KEYS[1], 'next_id', last)
end
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[4])
redis.call('ZADD', KEYS[2], last, ARGV[2])
redis.call('SET', KEYS[3], last, 'PX', ARGV[5])
redis.call('DEL', KEYS[4])
local excess = redis.call('ZCARD', KEYS[2]) - max_runs
if excess > 0 then
  -- The oldest producers' runs: they only lift the floor above.
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
end
return last
