#!lua flags=allow-oom
-- complete: active -> completed. By default the job is removed at once;
-- with retention switched on it joins the completed set, which is trimmed to
-- its bounds in this same call.
--
-- allow-oom: completing frees memory, so it must work on a full Redis.
--
-- KEYS[1]  jobs       hash, id -> record
-- KEYS[2]  active     this worker's hash, id -> lease deadline
-- KEYS[3]  stats      hash of counters (completed, completed_bytes)
-- KEYS[4]  completed  sorted set, id -> completion time (ms)
-- ARGV[1]  now (ms)
-- ARGV[2]  retained count bound (0: remove completed jobs)
-- ARGV[3]  retained age bound (ms)
-- ARGV[4]  retained bytes bound
-- ARGV[5..] ids (at most 1000)
-- Returns: the ids this worker no longer held a lease on (rescued or
-- cancelled meanwhile); they were not completed by this call.

local now = tonumber(ARGV[1])
local keep_count = tonumber(ARGV[2])
if #ARGV - 4 > 1000 then
  return redis.error_reply('ERR plimsoll complete: more than 1000 ids')
end

if #ARGV < 5 then return {} end
-- One HMGET checks every lease at once: per-id calls cost a redis.call each.
local leases = redis.call('HMGET', KEYS[2], unpack(ARGV, 5, #ARGV))
local done = {}
local lost = {}
for i = 5, #ARGV do
  if leases[i - 4] then
    done[#done + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
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
