#!lua flags=allow-oom
-- fetch: waiting -> active. Leases up to `count` jobs to one worker, highest
-- priority first, FIFO within a priority.
--
-- allow-oom: a full Redis must keep draining; a lease is a few bytes.
--
-- KEYS[1]      meta     hash; field paused stops fetching
-- KEYS[2]      workers  sorted set, worker -> earliest lease deadline
-- KEYS[3]      active   this worker's hash, id -> '<token>:<deadline ms>'
-- KEYS[4]      notify   wake-up list (at most one element)
-- KEYS[5..14]  waiting  lists, priority 0..9
-- KEYS[15]     jobs     hash, id -> record
-- ARGV[1]      now (ms)
-- ARGV[2]      count, the most jobs to lease (1..1000)
-- ARGV[3]      worker id
-- ARGV[4]      lease (ms)
-- ARGV[5]      inline: the most leased jobs whose records come back in the
--              reply (0..1000)
-- ARGV[6]      token: the fencing token of every lease this call takes, a
--              random 64-bit number the worker draws for each call (not a
--              counter in Redis: a failover that lost a counter's last
--              increments would hand out its tokens again, and a run whose
--              lease the failover lost could then settle a new lease of the
--              same job under the same token)
-- Returns: { leased ids, records, token }; ids and records empty (token 0)
-- when the queue is paused or nothing is waiting. `records` holds the jobs' records, in the order of
-- the ids, when at most `inline` jobs were leased, and is empty otherwise:
-- the worker then reads them with a plain HMGET. Passing kilobyte records
-- through Lua costs Redis about four times as much as HMGET does, which
-- matters for a batch; for a job or two the round trip it saves costs more
-- (it is most of the wait between enqueue and handler on a quiet queue).
-- The records cannot change while the lease is held.

local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
if want < 1 or want > 1000 then
  return redis.error_reply('ERR plimsoll fetch: bad count ' .. tostring(want))
end
if redis.call('HEXISTS', KEYS[1], 'paused') == 1 then
  return { {}, {}, 0 }
end

local out = {}
-- LMPOP takes from the first non-empty list, so one call serves the common
-- case instead of a call per priority; each further call starts at the next
-- non-empty list, at most ten in all.
local pop = { 'LMPOP', 10 }
for p = 0, 9 do
  pop[#pop + 1] = KEYS[5 + p]
end
pop[#pop + 1] = 'LEFT'
pop[#pop + 1] = 'COUNT'
pop[#pop + 1] = want
local count_at = #pop
while want > 0 do
  pop[count_at] = want
  local popped = redis.call(unpack(pop))
  if not popped then break end
  local ids = popped[2]
  want = want - #ids
  for i = 1, #ids do
    out[#out + 1] = ids[i]
  end
end

if #out == 0 then
  return { out, {}, 0 }
end
local token = ARGV[6]
local deadline = now + tonumber(ARGV[4])
-- One string for every lease, so that redis.call does not format numbers
-- once per job.
local lease = token .. ':' .. deadline
local leases = {}
for i = 1, #out do
  leases[#leases + 1] = out[i]
  leases[#leases + 1] = lease
end
call_chunked('HSET', KEYS[3], leases, 2)
-- LT: the worker's score is its earliest deadline; a new lease never moves
-- it later (and adds the worker if the rescuer had removed it).
redis.call('ZADD', KEYS[2], 'LT', deadline, ARGV[3])
if want <= 0 then
  -- A full batch may have left jobs behind: wake another idle worker.
  notify(KEYS[4])
end
if #out <= tonumber(ARGV[5]) then
  return { out, redis.call('HMGET', KEYS[15], unpack(out)), token }
end
return { out, {}, token }
