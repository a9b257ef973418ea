#!lua flags=allow-oom
-- cancel: waiting | scheduled | active -> cancelled. A cancelled job is
-- removed at once; only a counter remembers it. A worker running the job
-- learns of it at its next heartbeat and stops the handler.
--
-- Two callers: the API (any state; the job is looked for in every active
-- hash passed) and a handler's Outcome::Cancel, which passes its lease token
-- (ARGV[2]) and its own active hash (KEYS[16]) and may cancel only its own
-- lease: a run whose lease was rescued must not delete the job, which is
-- waiting again or leased to another run.
--
-- KEYS[1]      jobs       hash, id -> record
-- KEYS[2]      scheduled  sorted set, id -> due time
-- KEYS[3]      dead       sorted set, id -> time of death
-- KEYS[4]      completed  sorted set, id -> completion time
-- KEYS[5]      stats      hash of counters (cancelled)
-- KEYS[6..15]  waiting    lists, priority 0..9
-- KEYS[16..]   active     hashes of the workers that may hold the job
-- ARGV[1]      job id
-- ARGV[2]      (a handler's cancel only) the lease token of its run
-- Returns, for the API: the state the job was in: 'waiting', 'scheduled'
-- or 'active' when it was cancelled; 'dead' or 'completed' when it had
-- already finished (left alone); 'missing' when there is no such job;
-- 'unknown' when the job exists but is in none of these places (a worker
-- not in KEYS leased it a moment ago: read the worker list again and
-- retry). For a handler's cancel: 'active' when its lease was cancelled, or
-- 'lost' when the lease is no longer this run's (nothing was changed).

local id = ARGV[1]
if ARGV[2] then
  if not lease_is(redis.call('HGET', KEYS[16], id), ARGV[2] .. ':') then
    return 'lost'
  end
  redis.call('HDEL', KEYS[16], id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
  return 'active'
end

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
