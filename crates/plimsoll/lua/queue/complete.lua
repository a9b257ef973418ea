#!lua flags=allow-oom
-- complete: active -> completed. By default the job is removed at once;
-- with retention switched on it joins the completed set, which is trimmed to
-- its bounds in this same call.
--
-- allow-oom: completing frees memory, so it must work on a full Redis.
--
-- KEYS[1]  jobs       hash, id -> record
-- KEYS[2]  active     this worker's hash, id -> '<token>:<deadline ms>'
-- KEYS[3]  stats      hash of counters (completed, completed_bytes)
-- KEYS[4]  completed  sorted set, id -> completion time (ms)
-- ARGV[1]  now (ms)
-- ARGV[2]  retained count bound (0: remove completed jobs)
-- ARGV[3]  retained age bound (ms)
-- ARGV[4]  retained bytes bound
-- ARGV[5..] the leases, in groups: token, count, that many ids (at most
--           1000 ids in all)
-- Returns: the ids whose lease this worker no longer holds under that token
-- (rescued, and perhaps leased again, or cancelled meanwhile); they were not
-- completed by this call.

local now = tonumber(ARGV[1])
local keep_count = tonumber(ARGV[2])
local ids, prefixes = lease_groups(5, 1000)
if not ids then
  return redis.error_reply('ERR plimsoll complete: bad lease groups')
end

if #ids == 0 then return {} end
-- One HMGET reads every lease at once (per-id calls cost a redis.call
-- each); the token check is a string compare of what it returned.
local leases = redis.call('HMGET', KEYS[2], unpack(ids))
local done = {}
local lost = {}
for i = 1, #ids do
  if lease_is(leases[i], prefixes[i]) then
    done[#done + 1] = ids[i]
  else
    lost[#lost + 1] = ids[i]
  end
end

if #done > 0 then
  call_chunked('HDEL', KEYS[2], done, 1)
  if keep_count == 0 then
    call_chunked('HDEL', KEYS[1], done, 1)
  else
    local lengths = {}
    for i = 1, #done do
      lengths[i] = redis.call('HSTRLEN', KEYS[1], done[i])
    end
    retain(KEYS[4], KEYS[1], KEYS[3], 'completed_bytes', now, done, lengths,
      keep_count, tonumber(ARGV[3]), tonumber(ARGV[4]))
  end
  redis.call('HINCRBY', KEYS[3], 'completed', #done)
end
return lost
