#!lua
-- enqueue: new jobs -> waiting, or -> scheduled when they are due later.
--
-- Refused as a whole when Redis is at maxmemory (no allow-oom flag): either
-- every job of the batch is written or none is.
--
-- KEYS[1]      meta       hash; field next_id allocates ids (from 1,000,001)
-- KEYS[2]      jobs       hash, id -> record
-- KEYS[3]      scheduled  sorted set, id -> due time (ms)
-- KEYS[4]      stats      hash of counters (enqueued)
-- KEYS[5]      notify     wake-up list (at most one element)
-- KEYS[6..15]  waiting    lists, priority 0..9
-- KEYS[16..]   idempotency keys, one per job that has one
-- ARGV[1]      now (ms)
-- ARGV[2]      n, the number of jobs (1..1000)
-- ARGV[3..]    groups of jobs, in the order of their ids:
--   'R', count, priority, then count records        ready now, one priority
--   'S', count, then count pairs (due ms, record)    scheduled for later
--   'I', count, then count quads (due ms or 0, idempotency key index into
--        KEYS, window ms, record)                    with an idempotency key
-- Most batches are one 'R' group: one argument per job keeps the cost of
-- building ARGV, about a quarter of a microsecond per argument, low.
-- Returns: n integers, per job its new id, or -id of the job first enqueued
-- with the same idempotency key within its window.

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
if n < 1 or n > 1000 then
  return redis.error_reply('ERR plimsoll enqueue: bad batch of ' .. tostring(n))
end

-- Check the groups before writing anything.
local ARGS_PER_JOB = { R = 1, S = 2, I = 4 }
local HEADER = { R = 3, S = 2, I = 2 }
local total, at = 0, 3
while at <= #ARGV do
  local per_job = ARGS_PER_JOB[ARGV[at]]
  local count = tonumber(ARGV[at + 1])
  if not per_job or not count or count < 1 then
    return redis.error_reply('ERR plimsoll enqueue: bad group at argument ' .. at)
  end
  total = total + count
  at = at + HEADER[ARGV[at]] + per_job * count
end
if total ~= n or at ~= #ARGV + 1 then
  return redis.error_reply('ERR plimsoll enqueue: groups hold ' .. total .. ' jobs, not ' .. n)
end

-- Ids start at 1,000,001: from there to 10^14 every id has 7 to 14 digits
-- and Redis keeps each the same way (a field name or set member of up to 14
-- characters is one 16-byte allocation), so a stored job costs the same
-- memory for the queue's whole life. Counting from 1, every id stored after
-- the millionth job took 8 bytes more than before it (measured: +1.8% of
-- used_memory for a queue holding its 10,000 dead jobs). A queue made before
-- this jumps ahead once; ids only ever grow, so none is reused.
local ID_FLOOR = 1000000
local last = redis.call('HINCRBY', KEYS[1], 'next_id', n)
if last - n < ID_FLOOR then
  last = ID_FLOOR + n
  redis.call('HSET', KEYS[1], 'next_id', last)
end
local id = last - n
local result = {}
local records = {}
local ready = {}
local scheduled = {}

local function add_ready(p, job_id)
  local list = ready[p]
  if not list then
    list = {}
    ready[p] = list
  end
  list[#list + 1] = job_id
end

local function add(due, rec, job_id)
  local sid = tostring(job_id)
  records[#records + 1] = sid
  records[#records + 1] = rec
  if due > now then
    scheduled[#scheduled + 1] = due
    scheduled[#scheduled + 1] = sid
  else
    add_ready(rec_priority(rec), sid)
  end
  result[#result + 1] = job_id
end

local i = 3
while i <= #ARGV do
  local kind, count = ARGV[i], tonumber(ARGV[i + 1])
  if kind == 'R' then
    local list_p = tonumber(ARGV[i + 2])
    i = i + 3
    for j = i, i + count - 1 do
      id = id + 1
      -- Converted once here: redis.call would format the number twice.
      local sid = tostring(id)
      records[#records + 1] = sid
      records[#records + 1] = ARGV[j]
      add_ready(list_p, sid)
      result[#result + 1] = id
    end
    i = i + count
  elseif kind == 'S' then
    i = i + 2
    for j = i, i + 2 * (count - 1), 2 do
      id = id + 1
      add(tonumber(ARGV[j]), ARGV[j + 1], id)
    end
    i = i + 2 * count
  elseif kind == 'I' then
    i = i + 2
    for j = i, i + 4 * (count - 1), 4 do
      id = id + 1
      local key = KEYS[tonumber(ARGV[j + 1])]
      -- One call claims the key or returns the first job's id (NX with GET
      -- needs Redis 7.0).
      local existing = redis.call('SET', key, id, 'PX', ARGV[j + 2], 'NX', 'GET')
      if existing then
        result[#result + 1] = -tonumber(existing)
      else
        add(tonumber(ARGV[j]), ARGV[j + 3], id)
      end
    end
    i = i + 4 * count
  end
end

local added = #records / 2
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
