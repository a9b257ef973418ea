#!lua flags=no-writes,allow-stale
-- inspect_job: reads one job and where it is, without changing anything.
--
-- KEYS[1]      jobs       hash, id -> record
-- KEYS[2]      scheduled  sorted set, id -> due time
-- KEYS[3]      dead       sorted set, id -> time of death
-- KEYS[4]      completed  sorted set, id -> completion time
-- KEYS[5..]    active     hashes of the queue's workers
-- ARGV[1]      job id
-- ARGV[2..]    the worker ids matching KEYS[5..]
-- Returns: {} when there is no such job, else {state, record, time, worker}
-- where time is the due time (scheduled), time of death (dead), completion
-- time (completed) or lease deadline (active), and worker is the worker
-- holding an active job ('' otherwise).

local id = ARGV[1]
local rec = redis.call('HGET', KEYS[1], id)
if not rec then return {} end
local t = redis.call('ZSCORE', KEYS[2], id)
if t then return {'scheduled', rec, t, ''} end
t = redis.call('ZSCORE', KEYS[3], id)
if t then return {'dead', rec, t, ''} end
t = redis.call('ZSCORE', KEYS[4], id)
if t then return {'completed', rec, t, ''} end
for i = 5, #KEYS do
  t = redis.call('HGET', KEYS[i], id)
  if t then return {'active', rec, tostring(lease_deadline(t) or 0), ARGV[i - 3]} end
end
return {'waiting', rec, '0', ''}
