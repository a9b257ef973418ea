#!lua flags=allow-oom
-- retry_dead: dead -> waiting, with a fresh set of attempts. An operator
-- sends dead jobs back once the cause is fixed.
--
-- KEYS[1]      dead     sorted set, id -> time of death
-- KEYS[2]      jobs     hash, id -> record
-- KEYS[3]      stats    hash (dead_bytes)
-- KEYS[4]      notify   wake-up list (at most one element)
-- KEYS[5..14]  waiting  lists, priority 0..9
-- ARGV[1]      limit: with no ids, retry up to this many, oldest first (1..1000)
-- ARGV[2..]    ids to retry (at most 1000); none: the oldest `limit`
-- Returns: the number of jobs sent back.

local ids
if #ARGV > 1 then
  if #ARGV - 1 > 1000 then
    return redis.error_reply('ERR plimsoll retry_dead: more than 1000 ids')
  end
  ids = {}
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  local limit = tonumber(ARGV[1])
  if limit < 1 or limit > 1000 then
    return redis.error_reply('ERR plimsoll retry_dead: bad limit')
  end
  ids = redis.call('ZRANGE', KEYS[1], 0, limit - 1)
end
local moved, freed = 0, 0
for i = 1, #ids do
  if redis.call('ZREM', KEYS[1], ids[i]) == 1 then
    local rec = redis.call('HGET', KEYS[2], ids[i])
    if rec then
      freed = freed + string.len(rec)
      redis.call('HSET', KEYS[2], ids[i], rec_reset(rec))
      redis.call('RPUSH', KEYS[5 + rec_priority(rec)], ids[i])
      moved = moved + 1
    end
  end
end
if freed > 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HDEL', KEYS[3], 'dead_bytes')
  else
    redis.call('HINCRBY', KEYS[3], 'dead_bytes', -freed)
  end
end
if moved > 0 then notify(KEYS[4]) end
return moved
