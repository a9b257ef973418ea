#!lua flags=allow-oom
-- cancel: waiting | scheduled | active -> cancelled. A cancelled job is
-- removed at once; only a counter remembers it. A worker running the job
-- learns of it at its next heartbeat and stops the handler.
--
-- KEYS[1]      jobs       hash, id -> record
-- KEYS[2]      scheduled  sorted set, id -> due time
-- KEYS[3]      dead       sorted set, id -> time of death
-- KEYS[4]      completed  sorted set, id -> completion time
-- KEYS[5]      stats      hash of counters (cancelled)
-- KEYS[6..15]  waiting    lists, priority 0..9
-- KEYS[16..]   active     hashes of the workers that may hold the job
-- ARGV[1]      job id
-- Returns: the state the job was in: 'waiting', 'scheduled' or 'active'
-- when it was cancelled; 'dead' or 'completed' when it had already finished
-- (left alone); 'missing' when there is no such job; 'unknown' when the job
-- exists but is in none of these places (a worker not in KEYS leased it a
-- moment ago: read the worker list again and retry).

local id = ARGV[1]
local rec = redis.call('HGET', KEYS[1], id)
if not rec then return 'missing' end
if redis.call('ZSCORE', KEYS[3], id) then return 'dead' end
if redis.call('ZSCORE', KEYS[4], id) then return 'completed' end

local state = false
if redis.call('ZREM', KEYS[2], id) == 1 then
  state = 'scheduled'
else
  for i = 16, #KEYS do
    if redis.call('HDEL', KEYS[i], id) == 1 then
      state = 'active'
      break
    end
  end
end
if not state then
  -- Search from the tail: recent jobs are the likeliest to be cancelled.
  if redis.call('LREM', KEYS[6 + rec_priority(rec)], -1, id) == 1 then
    state = 'waiting'
  end
end
if not state then return 'unknown' end
redis.call('HDEL', KEYS[1], id)
redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
return state
