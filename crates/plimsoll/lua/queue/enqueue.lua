#!lua
-- enqueue: new jobs -> waiting, or -> scheduled when they are due later.
--
-- Refused as a whole when Redis is at maxmemory (no allow-oom flag): either
-- every job of the batch is written or none is.
--
-- KEYS[1]      meta       hash; field next_id allocates ids
-- KEYS[2]      jobs       hash, id -> record
-- KEYS[3]      scheduled  sorted set, id -> due time (ms)
-- KEYS[4]      stats      hash of counters (enqueued)
-- KEYS[5]      notify     wake-up list (at most one element)
-- KEYS[6..15]  waiting    lists, priority 0..9
-- KEYS[16..]   idempotency keys, one per job that has one
-- ARGV[1]      now (ms)
-- ARGV[2]      n, the number of jobs (1..1000)
-- then 4 values per job:
--   run_at (ms; 0 or <= now: ready now), idempotency key index into KEYS
--   (0: none), idempotency window (ms), record
-- Returns: n integers, per job its new id, or -id of the job first enqueued
-- with the same idempotency key within its window.

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
if n < 1 or n > 1000 or #ARGV ~= 2 + 4 * n then
  return redis.error_reply('ERR plimsoll enqueue: bad batch of ' .. tostring(n))
end

local last = redis.call('HINCRBY', KEYS[1], 'next_id', n)
local first = last - n + 1
local result = {}
local records = {}
local ready = {}
local scheduled = {}
local added = 0

for i = 1, n do
  local arg = 3 + (i - 1) * 4
  local id = first + i - 1
  local idem = tonumber(ARGV[arg + 1])
  local existing = false
  if idem > 0 then
    existing = redis.call('GET', KEYS[idem])
    if not existing then
      redis.call('SET', KEYS[idem], id, 'PX', ARGV[arg + 2])
    end
  end
  if existing then
    result[i] = -tonumber(existing)
  else
    result[i] = id
    added = added + 1
    local rec = ARGV[arg + 3]
    records[#records + 1] = id
    records[#records + 1] = rec
    local run_at = tonumber(ARGV[arg])
    if run_at > now then
      scheduled[#scheduled + 1] = run_at
      scheduled[#scheduled + 1] = id
    else
      local p = rec_priority(rec)
      local list = ready[p]
      if not list then
        list = {}
        ready[p] = list
      end
      list[#list + 1] = id
    end
  end
end

if added > 0 then
  call_chunked('HSET', KEYS[2], records, 2)
  if #scheduled > 0 then
    call_chunked('ZADD', KEYS[3], scheduled, 2)
  end
  local any_ready = false
  for p = 0, 9 do
    if ready[p] then
      call_chunked('RPUSH', KEYS[6 + p], ready[p], 1)
      any_ready = true
    end
  end
  if any_ready then
    notify(KEYS[5])
  end
  redis.call('HINCRBY', KEYS[4], 'enqueued', added)
end
return result
