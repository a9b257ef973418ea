#!lua flags=allow-oom
-- fail: active -> scheduled (retry after backoff), -> waiting (retry now), or
-- -> dead (attempts used up, or the handler failed the job for good). The
-- dead set is trimmed to its caps in this same call.
--
-- allow-oom: a failure replaces a record with one of about the same size and
-- must be recorded on a full Redis, or the job would run again and again.
--
-- KEYS[1]      jobs       hash, id -> record
-- KEYS[2]      active     this worker's hash, id -> '<token>:<deadline ms>'
-- KEYS[3]      stats      hash of counters (retried, dead, dead_bytes)
-- KEYS[4]      scheduled  sorted set, id -> due time (ms)
-- KEYS[5]      dead       sorted set, id -> time of death (ms)
-- KEYS[6]      notify     wake-up list (at most one element)
-- KEYS[7..16]  waiting    lists, priority 0..9
-- ARGV[1]      now (ms)
-- ARGV[2..4]   dead-set bounds: count, age (ms), bytes
-- then 4 values per job (at most 1000 jobs):
--   id, lease token, retry_at (ms; -1: fail for good), error text
-- Returns: {retried, dead, lost ids...}; lost ids are those whose lease this
-- worker no longer holds under that token, left untouched.

local now = tonumber(ARGV[1])
local n = (#ARGV - 4) / 4
if n > 1000 or n ~= math.floor(n) then
  return redis.error_reply('ERR plimsoll fail: bad arguments')
end
if n == 0 then return {0, 0} end

-- One HMGET reads every lease; the token check is a string compare.
local ids = {}
for i = 0, n - 1 do ids[i + 1] = ARGV[5 + 4 * i] end
local leases = redis.call('HMGET', KEYS[2], unpack(ids))

local retried, dead_ids, dead_lengths, lost, owned = 0, {}, {}, {}, {}
local woke = false
for i = 0, n - 1 do
  local id = ids[i + 1]
  local retry_at = tonumber(ARGV[7 + 4 * i])
  local rec = false
  if lease_is(leases[i + 1], ARGV[6 + 4 * i] .. ':') then
    owned[#owned + 1] = id
    rec = redis.call('HGET', KEYS[1], id)
  end
  if not rec then
    lost[#lost + 1] = id
  else
    rec = rec_failed(rec, ARGV[8 + 4 * i])
    redis.call('HSET', KEYS[1], id, rec)
    if retry_at >= 0 and rec_attempts(rec) < rec_max_attempts(rec) then
      retried = retried + 1
      if retry_at > now then
        redis.call('ZADD', KEYS[4], retry_at, id)
      else
        redis.call('RPUSH', KEYS[7 + rec_priority(rec)], id)
        woke = true
      end
    else
      dead_ids[#dead_ids + 1] = id
      dead_lengths[#dead_lengths + 1] = string.len(rec)
    end
  end
end

if #owned > 0 then call_chunked('HDEL', KEYS[2], owned, 1) end
if woke then notify(KEYS[6]) end
if retried > 0 then redis.call('HINCRBY', KEYS[3], 'retried', retried) end
if #dead_ids > 0 then
  redis.call('HINCRBY', KEYS[3], 'dead', #dead_ids)
  retain(KEYS[5], KEYS[1], KEYS[3], 'dead_bytes', now, dead_ids, dead_lengths,
    tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
end
local out = {retried, #dead_ids}
for i = 1, #lost do out[#out + 1] = lost[i] end
return out
