#!lua flags=allow-oom
-- heartbeat: renews the leases of a worker's running jobs (active -> active)
-- and records when the worker must next be checked.
--
-- The worker's score is computed here, over everything its `active` hash
-- holds, not only over the leases the worker remembers: a lease taken by a
-- fetch whose reply never arrived, or by an earlier process with the same
-- worker id, is not renewed, and the score makes the rescuer look at it
-- once it lapses.
--
-- KEYS[1]  workers  sorted set, worker -> earliest lease deadline
-- KEYS[2]  active   this worker's hash, id -> '<token>:<deadline ms>'
-- ARGV[1]  worker id
-- ARGV[2]  the new lease deadline (ms); also the worker's own liveness
--          deadline, its score when it holds no lease
-- then 2 values per lease to renew (at most 10,000): id, token
-- Returns: { lost, score, time }: lost is a flat list of id, token pairs
-- whose lease is gone (the job was cancelled, or rescued and perhaps leased
-- again under another token); the worker stops their handlers. score is the
-- score written: the earliest deadline in the hash after renewal, or ARGV[2].
-- time is Redis' TIME (seconds, microseconds), which the worker uses to
-- keep its clock on Redis' time; it is not used here.

if #ARGV - 2 > 20000 or (#ARGV - 2) % 2 ~= 0 then
  return redis.error_reply('ERR plimsoll heartbeat: bad arguments')
end
local time = redis.call('TIME')
-- One worker holds at most 10,000 leases (its concurrency plus prefetch).
local entries = redis.call('HGETALL', KEYS[2])
local held = {}
for i = 1, #entries, 2 do
  held[entries[i]] = entries[i + 1]
end

local renewed, lost = {}, {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if lease_is(held[id], token .. ':') then
    local value = token .. ':' .. ARGV[2]
    renewed[#renewed + 1] = id
    renewed[#renewed + 1] = value
    held[id] = value
  else
    lost[#lost + 1] = id
    lost[#lost + 1] = token
  end
end
if #renewed > 0 then
  call_chunked('HSET', KEYS[2], renewed, 2)
end

local score = tonumber(ARGV[2])
for i = 1, #entries, 2 do
  -- An unreadable value counts as lapsed, so the rescuer looks at it.
  local deadline = lease_deadline(held[entries[i]]) or 0
  if deadline < score then score = deadline end
end
redis.call('ZADD', KEYS[1], score, ARGV[1])
return { lost, score, time }
