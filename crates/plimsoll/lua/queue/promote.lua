#!lua flags=allow-oom
-- promote: scheduled -> waiting for jobs that are due (delayed jobs and
-- retries whose backoff has passed).
--
-- allow-oom: moving an id from a sorted set to a list frees memory.
--
-- KEYS[1]      scheduled  sorted set, id -> due time (ms)
-- KEYS[2]      jobs       hash, id -> record
-- KEYS[3]      notify     wake-up list (at most one element)
-- KEYS[4..13]  waiting    lists, priority 0..9
-- ARGV[1]      now (ms)
-- ARGV[2]      limit, the most jobs to move (1..1000)
-- Returns: {moved, due time of the next scheduled job or -1}.

local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit < 1 or limit > 1000 then
  return redis.error_reply('ERR plimsoll promote: bad limit')
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local moved = 0
if #ids > 0 then
  local records = redis.call('HMGET', KEYS[2], unpack(ids))
  local ready = {}
  for i = 1, #ids do
    if records[i] then
      local p = rec_priority(records[i])
      local list = ready[p]
      if not list then
        list = {}
        ready[p] = list
      end
      list[#list + 1] = ids[i]
      moved = moved + 1
    end
  end
  call_chunked('ZREM', KEYS[1], ids, 1)
  for p = 0, 9 do
    if ready[p] then call_chunked('RPUSH', KEYS[4 + p], ready[p], 1) end
  end
  if moved > 0 then notify(KEYS[3]) end
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #next_due == 0 then
  return {moved, -1}
end
return {moved, tonumber(next_due[2])}
