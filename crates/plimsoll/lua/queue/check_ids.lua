#!lua flags=allow-oom
-- check_ids: before a batch's records are written, is the producer's id run
-- still recorded?
--
-- Sent with EVAL (its source, not its SHA) right after a WATCH of
-- `lost_runs` and before the MULTI of the batch's HSET and enqueue.lua, so
-- that it runs on a server that never saw it: a replica promoted after a
-- failover has an empty script cache, and that is when it matters. When the
-- run is gone (lost in a failover or restart with next_id, see
-- reserve_ids.lua), its ids may be another producer's now: the script
-- counts that in `lost_runs`, which the producer watches, so Redis does not
-- run the transaction at all and no record is written over. The producer
-- reserves again and sends the batch under new ids. allow-oom: it must run
-- whenever the HSET after it could (a full Redis refuses that anyway).
--
-- KEYS[1]      id_runs    sorted set, producer token -> last id of its run
-- KEYS[2]      lost_runs  counter of batches stopped here (watched)
-- ARGV[1]      the producer's token
-- ARGV[2]      the highest id in the batch
-- Returns: 1 when the run holds the batch's ids, 0 when it was lost.

local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
if last and tonumber(last) >= tonumber(ARGV[2]) then
  return 1
end
redis.call('INCR', KEYS[2])
return 0
