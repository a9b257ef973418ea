#!lua flags=allow-oom
-- trim: completed | dead -> removed, for jobs beyond their retention bounds.
-- The janitor runs this on a timer, so that age bounds fire on an idle queue
-- too; the transitions that add to these sets trim them as well.
--
-- allow-oom: trimming frees memory.
--
-- KEYS[1]  completed  sorted set, id -> completion time
-- KEYS[2]  dead       sorted set, id -> time of death
-- KEYS[3]  jobs       hash, id -> record
-- KEYS[4]  stats      hash (completed_bytes, dead_bytes)
-- ARGV[1]  now (ms)
-- ARGV[2..4]  completed bounds: count (0: keep none), age (ms), bytes
-- ARGV[5..7]  dead bounds: count, age (ms), bytes
-- ARGV[8]  budget: the most jobs to remove from each set (1..10000)
-- Returns: {completed removed, dead removed}; a result equal to the budget
-- means there may be more to remove.

local now = tonumber(ARGV[1])
local budget = tonumber(ARGV[8])
if budget < 1 or budget > 10000 then
  return redis.error_reply('ERR plimsoll trim: bad budget')
end
local completed = trim_set(KEYS[1], KEYS[3], KEYS[4], 'completed_bytes', now,
  tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), budget)
local dead = trim_set(KEYS[2], KEYS[3], KEYS[4], 'dead_bytes', now,
  tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), budget)
return {completed, dead}
