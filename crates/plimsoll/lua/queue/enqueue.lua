#!lua
-- enqueue: new jobs -> waiting, or -> scheduled when they are due later.
--
-- Runs inside MULTI/EXEC, right after an HSET of the batch's records under
-- ids the producer reserved beforehand (`reserve_ids.lua`); the WATCH of
-- their run's key before the MULTI made sure those ids are still the
-- producer's (see queue/enqueue/writer.rs). The records never
-- pass through Lua: Redis turns every argument of a script into a Lua string,
-- hashing each of its bytes, then copies it again for redis.call, which cost
-- a kilobyte job about 1.4 µs of Redis time of 3.3 — this script sees only
-- ids. MULTI/EXEC keeps the pair one atomic step: a full Redis refuses the
-- whole transaction (this script has no allow-oom flag), so either every job
-- of the batch is written or none is.
--
-- KEYS[1]      jobs       hash, id -> record (already written by the HSET)
-- KEYS[2]      scheduled  sorted set, id -> due time (ms)
-- KEYS[3]      stats      hash of counters (enqueued)
-- KEYS[4]      notify     wake-up list (at most one element)
-- KEYS[5..14]  waiting    lists, priority 0..9
-- KEYS[15]     id_run     the batch's run key, not used here: declared so
--                         that a slot migration that refuses the WATCH and
--                         SET before the MULTI refuses this script too (the
--                         whole pipeline is then sent again, and must not
--                         have run)
-- KEYS[16..]   idempotency keys, one per job that has one
-- ARGV[1]      now (ms)
-- ARGV[2]      n, the number of jobs (1..1000)
-- ARGV[3..]    groups of jobs, in the batch's order:
--   'R', count, priority, then count ids              ready now, one priority
--   'S', count, then count pairs (due ms, id)          scheduled for later
--   'I', count, then count 5-tuples (due ms or 0, idempotency key index into
--        KEYS, window ms, priority, id)                with an idempotency key
-- Returns: a flat list of pairs (position in the batch from 1, id of the job
-- first enqueued with the same idempotency key) for the jobs that were
-- duplicates; their records are removed again. Empty when there were none.

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
if n < 1 or n > 1000 then
  return redis.error_reply('ERR plimsoll enqueue: bad batch of ' .. tostring(n))
end

-- Check the groups before writing anything.
local ARGS_PER_JOB = { R = 1, S = 2, I = 5 }
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

-- Waiting ids per priority, in order; a group of ready jobs is pushed
-- straight from ARGV.
local ready = {}
local scheduled = {}
local duplicates = {}
local any_ready = false

local function add_ready(p, id)
  local list = ready[p]
  if not list then
    list = {}
    ready[p] = list
  end
  list[#list + 1] = id
end

local position = 0
local i = 3
while i <= #ARGV do
  local kind, count = ARGV[i], tonumber(ARGV[i + 1])
  if kind == 'R' then
    local p = tonumber(ARGV[i + 2])
    local waiting = KEYS[5 + p]
    i = i + 3
    -- Earlier jobs of the same priority may wait in `ready`: push them
    -- first, so the list keeps the batch's order.
    if ready[p] then
      call_chunked('RPUSH', waiting, ready[p], 1)
      ready[p] = nil
    end
    for first = i, i + count - 1, CHUNK do
      redis.call('RPUSH', waiting, unpack(ARGV, first, math.min(first + CHUNK - 1, i + count - 1)))
    end
    any_ready = true
    position = position + count
    i = i + count
  elseif kind == 'S' then
    i = i + 2
    for j = i, i + 2 * (count - 1), 2 do
      scheduled[#scheduled + 1] = ARGV[j]
      scheduled[#scheduled + 1] = ARGV[j + 1]
    end
    position = position + count
    i = i + 2 * count
  elseif kind == 'I' then
    i = i + 2
    for j = i, i + 5 * (count - 1), 5 do
      position = position + 1
      local id = ARGV[j + 4]
      -- One call claims the key or returns the first job's id (NX with GET
      -- needs Redis 7.0).
      local existing = redis.call('SET', KEYS[tonumber(ARGV[j + 1])], id, 'PX', ARGV[j + 2], 'NX', 'GET')
      if existing then
        redis.call('HDEL', KEYS[1], id)
        duplicates[#duplicates + 1] = position
        duplicates[#duplicates + 1] = tonumber(existing)
      elseif tonumber(ARGV[j]) > now then
        scheduled[#scheduled + 1] = ARGV[j]
        scheduled[#scheduled + 1] = id
      else
        add_ready(tonumber(ARGV[j + 3]), id)
      end
    end
    i = i + 5 * count
  end
end

if #scheduled > 0 then
  call_chunked('ZADD', KEYS[2], scheduled, 2)
end
for p = 0, 9 do
  if ready[p] then
    call_chunked('RPUSH', KEYS[5 + p], ready[p], 1)
    any_ready = true
  end
end
if any_ready then
  notify(KEYS[4])
end
local added = n - #duplicates / 2
if added > 0 then
  redis.call('HINCRBY', KEYS[3], 'enqueued', added)
end
return duplicates
