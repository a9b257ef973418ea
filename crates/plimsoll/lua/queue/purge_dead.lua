#!lua flags=allow-oom
-- purge_dead: dead -> removed. Deletes dead jobs for good.
--
-- allow-oom: deleting is how room is made on a full Redis.
--
-- KEYS[1]  dead   sorted set, id -> time of death
-- KEYS[2]  jobs   hash, id -> record
-- KEYS[3]  stats  hash (dead_bytes)
-- ARGV[1]  limit: with no ids, purge up to this many, oldest first (1..1000)
-- ARGV[2..] ids to purge (at most 1000); none: the oldest `limit`
-- Returns: the number of jobs removed.

local ids
if #ARGV > 1 then
  if #ARGV - 1 > 1000 then
    return redis.error_reply('ERR plimsoll purge_dead: more than 1000 ids')
  end
  ids = {}
  for i = 2, #ARGV do
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) then ids[#ids + 1] = ARGV[i] end
  end
else
  local limit = tonumber(ARGV[1])
  if limit < 1 or limit > 1000 then
    return redis.error_reply('ERR plimsoll purge_dead: bad limit')
  end
  ids = redis.call('ZRANGE', KEYS[1], 0, limit - 1)
end
if #ids == 0 then return 0 end
local freed = drop_jobs(KEYS[1], KEYS[2], ids)
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HDEL', KEYS[3], 'dead_bytes')
else
  redis.call('HINCRBY', KEYS[3], 'dead_bytes', -freed)
end
return #ids
