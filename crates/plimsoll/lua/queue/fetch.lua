#!lua flags=allow-oom
-- fetch: waiting -> active. Leases up to `count` jobs to one worker, highest
-- priority first, FIFO within a priority.
--
-- allow-oom: a full Redis must keep draining; a lease is a few bytes.
--
-- KEYS[1]      meta     hash; field paused stops fetching
-- KEYS[2]      workers  sorted set, worker -> earliest lease deadline
-- KEYS[3]      active   this worker's hash, id -> lease deadline (ms)
-- KEYS[4]      notify   wake-up list (at most one element)
-- KEYS[5..14]  waiting  lists, priority 0..9
-- ARGV[1]      now (ms)
-- ARGV[2]      count, the most jobs to lease (1..1000)
-- ARGV[3]      worker id
-- ARGV[4]      lease (ms)
-- Returns: the leased ids; empty when the queue is paused or nothing is
-- waiting. The worker reads their records with a plain HMGET afterwards:
-- passing kilobyte records through Lua costs Redis about four times as much
-- as HMGET does, and the records cannot change while the lease is held.

local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
if want < 1 or want > 1000 then
  return redis.error_reply('ERR plimsoll fetch: bad count ' .. tostring(want))
end
if redis.call('HEXISTS', KEYS[1], 'paused') == 1 then
  return {}
end

-- A string, so that redis.call does not format the number once per job.
local deadline = tostring(now + tonumber(ARGV[4]))
local out = {}
local leases = {}
for p = 0, 9 do
  if want <= 0 then break end
  local ids = redis.call('LPOP', KEYS[5 + p], want)
  if ids then
    want = want - #ids
    for i = 1, #ids do
      out[#out + 1] = ids[i]
      leases[#leases + 1] = ids[i]
      leases[#leases + 1] = deadline
    end
  end
end

if #leases > 0 then
  call_chunked('HSET', KEYS[3], leases, 2)
  redis.call('ZADD', KEYS[2], 'NX', deadline, ARGV[3])
  if want <= 0 then
    -- A full batch may have left jobs behind: wake another idle worker.
    notify(KEYS[4])
  end
end
return out
