#!lua flags=allow-oom
-- heartbeat: renews the leases of a worker's running jobs (active -> active)
-- and records when the worker must next be checked.
--
-- KEYS[1]  workers  sorted set, worker -> earliest lease deadline
-- KEYS[2]  active   this worker's hash, id -> lease deadline
-- ARGV[1]  worker id
-- ARGV[2]  the worker's score: the earliest deadline among its leases, or
--          its own liveness deadline when it holds none
-- then 2 values per job (at most 10,000 jobs): id, new lease deadline (ms)
-- Returns: ids whose lease is gone (the job was cancelled or rescued); the
-- worker stops their handlers.

if #ARGV - 2 > 20000 then
  return redis.error_reply('ERR plimsoll heartbeat: too many leases')
end
local lost = {}
for i = 3, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return lost
