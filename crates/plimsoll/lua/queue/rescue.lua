#!lua flags=allow-oom
-- rescue: active -> waiting (or -> dead when attempts are used up) for jobs
-- whose lease expired: their worker crashed, hung, or lost Redis for longer
-- than a lease. The lost run counts as an attempt, so a job that kills its
-- worker every time ends in the dead set instead of looping.
--
-- KEYS[1]      workers  sorted set, worker -> earliest lease deadline
-- KEYS[2]      active   the worker's hash, id -> '<token>:<deadline ms>'
-- KEYS[3]      jobs     hash, id -> record
-- KEYS[4]      stats    hash of counters (rescued, dead, dead_bytes)
-- KEYS[5]      dead     sorted set, id -> time of death (ms)
-- KEYS[6]      notify   wake-up list (at most one element)
-- KEYS[7..16]  waiting  lists, priority 0..9
-- ARGV[1]      now (ms)
-- ARGV[2]      worker id
-- ARGV[3..5]   dead-set bounds: count, age (ms), bytes
-- Returns: {rescued, dead}.

local now = tonumber(ARGV[1])
-- One worker holds at most 10,000 leases (its concurrency plus prefetch).
local entries = redis.call('HGETALL', KEYS[2])
local err = 'lease expired: worker ' .. ARGV[2] .. ' stopped renewing it'
local rescued, dead_ids, dead_lengths = 0, {}, {}
local earliest = false
for i = 1, #entries, 2 do
  local id = entries[i]
  -- An unreadable value counts as lapsed: a lease nobody can renew.
  local lease = lease_deadline(entries[i + 1]) or 0
  if lease < now then
    redis.call('HDEL', KEYS[2], id)
    local rec = redis.call('HGET', KEYS[3], id)
    if rec then
      rec = rec_failed(rec, err)
      redis.call('HSET', KEYS[3], id, rec)
      if rec_attempts(rec) < rec_max_attempts(rec) then
        redis.call('LPUSH', KEYS[7 + rec_priority(rec)], id)
        rescued = rescued + 1
      else
        dead_ids[#dead_ids + 1] = id
        dead_lengths[#dead_lengths + 1] = string.len(rec)
      end
    end
  elseif not earliest or lease < earliest then
    earliest = lease
  end
end

if earliest then
  redis.call('ZADD', KEYS[1], earliest, ARGV[2])
else
  -- No leases left. A live worker re-registers with its next heartbeat.
  redis.call('ZREM', KEYS[1], ARGV[2])
end
if rescued > 0 then
  redis.call('HINCRBY', KEYS[4], 'rescued', rescued)
  notify(KEYS[6])
end
if #dead_ids > 0 then
  redis.call('HINCRBY', KEYS[4], 'dead', #dead_ids)
  retain(KEYS[5], KEYS[3], KEYS[4], 'dead_bytes', now, dead_ids, dead_lengths,
    tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
end
return {rescued, #dead_ids}
