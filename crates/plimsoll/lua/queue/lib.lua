-- lib.lua: helpers shared by the queue scripts.
--
-- This file is not a script of its own: the Rust side inserts it after the
-- first line (the shebang) of every queue script, so these locals are in
-- scope there. Keep it to pure functions plus helpers that only touch the
-- keys they are given.
--
-- Job record layout (big-endian), written by crates/plimsoll/src/queue/record.rs:
--   byte 1        format version (1)
--   byte 2        flags (bit 0: payload is zstd-compressed; bit 1: with the
--                 built-in dictionary crates/plimsoll/dict/json-v1.zdict)
--   byte 3        priority, 0..9 (0 runs first)
--   byte 4        reserved, 0
--   bytes 5-6     attempts that have ended (failed, timed out, lease lost)
--   bytes 7-8     max attempts
--   bytes 9-12    timeout in ms
--   bytes 13-20   enqueued-at, ms since the epoch
--   bytes 21-24   payload length
--   bytes 25..    payload, then the last error (UTF-8) to the end

-- Largest number of values passed to one redis.call through unpack; Lua's C
-- stack holds 8,000, this keeps well under it.
local CHUNK = 512

-- Leases. A worker's `active` hash maps a job id to '<token>:<deadline>': the
-- lease's fencing token (random, drawn by the worker for each fetch call)
-- and its deadline in ms. A script that settles, renews or hands back
-- a lease is told the token the worker holds and acts only when the value
-- still carries it: a run whose lease was rescued (and perhaps leased again,
-- to the same worker) cannot touch the new lease.

-- Whether an active-hash value belongs to the lease whose token is
-- `prefix` without the trailing ':' (a string compare; no Redis call).
local function lease_is(value, prefix)
  return value and string.sub(value, 1, #prefix) == prefix
end

-- The deadline (ms) of an active-hash value, or nil when it is not one.
-- Values written before fencing tokens hold the deadline alone.
local function lease_deadline(value)
  local colon = string.find(value, ':', 1, true)
  if colon then
    return tonumber(string.sub(value, colon + 1))
  end
  return tonumber(value)
end

-- Reads leases passed as groups `token, count, id...` from ARGV[from] on
-- (the jobs of one fetch share a token, so it is sent once per group).
-- Returns parallel tables of ids and lease prefixes ('<token>:'), or nil
-- when the groups are malformed or hold more than `max` ids.
local function lease_groups(from, max)
  local ids, prefixes = {}, {}
  local i = from
  while i <= #ARGV do
    local prefix = ARGV[i] .. ':'
    local n = tonumber(ARGV[i + 1])
    if not n or n < 1 or i + 1 + n > #ARGV or #ids + n > max then
      return nil
    end
    for j = i + 2, i + 1 + n do
      ids[#ids + 1] = ARGV[j]
      prefixes[#prefixes + 1] = prefix
    end
    i = i + 2 + n
  end
  return ids, prefixes
end

local function rec_priority(rec)
  return string.byte(rec, 3)
end

local function rec_attempts(rec)
  return (struct.unpack('>H', rec, 5))
end

local function rec_max_attempts(rec)
  return (struct.unpack('>H', rec, 7))
end

-- The record with one more ended attempt and `err` as its last error.
local function rec_failed(rec, err)
  local attempts = rec_attempts(rec)
  local payload_len = struct.unpack('>I4', rec, 21)
  if attempts < 65535 then attempts = attempts + 1 end
  return string.sub(rec, 1, 4) .. struct.pack('>H', attempts) ..
    string.sub(rec, 7, 24 + payload_len) .. err
end

-- The record with its attempts reset to 0 (a dead job sent back to run).
local function rec_reset(rec)
  return string.sub(rec, 1, 4) .. struct.pack('>H', 0) .. string.sub(rec, 7)
end

-- redis.call(cmd, key, items...) in chunks of CHUNK items; `step` keeps
-- pairs together (2 for HSET/ZADD pairs, 1 otherwise).
local function call_chunked(cmd, key, items, step)
  local size = CHUNK - (CHUNK % step)
  for i = 1, #items, size do
    redis.call(cmd, key, unpack(items, i, math.min(i + size - 1, #items)))
  end
end

-- Pushes a wake-up token for idle workers, keeping the list at one element.
local function notify(key)
  if redis.call('LLEN', key) == 0 then
    redis.call('RPUSH', key, 1)
  end
end

-- Removes jobs (their set entry and record) and returns the record bytes freed.
local function drop_jobs(set, jobs, ids)
  local bytes = 0
  for i = 1, #ids do
    bytes = bytes + redis.call('HSTRLEN', jobs, ids[i])
  end
  call_chunked('HDEL', jobs, ids, 1)
  call_chunked('ZREM', set, ids, 1)
  return bytes
end

-- Keeps a retention set (a sorted set of job ids scored by time, with their
-- records in `jobs` and their byte total in stats[bytes_field]) within its
-- count, age and byte bounds, oldest first, removing at most `budget` jobs.
-- Returns the number of jobs removed.
local function trim_set(set, jobs, stats, bytes_field, now, max_count, max_age, max_bytes, budget)
  local removed = 0
  local freed = 0
  local excess = redis.call('ZCARD', set) - max_count
  if excess > 0 and budget > 0 then
    local ids = redis.call('ZRANGE', set, 0, math.min(excess, budget) - 1)
    freed = freed + drop_jobs(set, jobs, ids)
    removed = removed + #ids
  end
  if removed < budget then
    local ids = redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. (now - max_age),
      'LIMIT', 0, budget - removed)
    if #ids > 0 then
      freed = freed + drop_jobs(set, jobs, ids)
      removed = removed + #ids
    end
  end
  local bytes = tonumber(redis.call('HGET', stats, bytes_field) or '0') - freed
  while bytes > max_bytes and removed < budget do
    local ids = redis.call('ZRANGE', set, 0, 0)
    if #ids == 0 then
      -- Nothing left to remove: the total drifted (e.g. a record removed by
      -- hand); start counting afresh.
      bytes = 0
      break
    end
    bytes = bytes - drop_jobs(set, jobs, ids)
    removed = removed + 1
  end
  if bytes < 0 then bytes = 0 end
  if bytes == 0 and redis.call('EXISTS', set) == 0 then
    redis.call('HDEL', stats, bytes_field)
  else
    redis.call('HSET', stats, bytes_field, bytes)
  end
  return removed
end

-- Adds jobs whose records were just written to a retention set and keeps the
-- set within bounds. `ids` and `records` are parallel tables.
local function retain(set, jobs, stats, bytes_field, now, ids, lengths, max_count, max_age, max_bytes)
  local pairs_ = {}
  local bytes = 0
  for i = 1, #ids do
    pairs_[#pairs_ + 1] = now
    pairs_[#pairs_ + 1] = ids[i]
    bytes = bytes + lengths[i]
  end
  call_chunked('ZADD', set, pairs_, 2)
  redis.call('HINCRBY', stats, bytes_field, bytes)
  -- Room for what was added plus some backlog, so a trim never stalls the
  -- transition that triggered it for long.
  return trim_set(set, jobs, stats, bytes_field, now, max_count, max_age, max_bytes, #ids + 100)
end
