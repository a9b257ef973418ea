#!lua flags=allow-oom
-- hand_back: active -> waiting, at the front of its priority, without
-- counting an attempt. A worker that shuts down returns the jobs it leased
-- but did not finish (or never started).
--
-- KEYS[1]      jobs     hash, id -> record
-- KEYS[2]      active   this worker's hash, id -> lease deadline
-- KEYS[3]      notify   wake-up list (at most one element)
-- KEYS[4..13]  waiting  lists, priority 0..9
-- ARGV[1..]    ids, oldest first (at most 1000)
-- Returns: the number of jobs handed back.

if #ARGV > 1000 then
  return redis.error_reply('ERR plimsoll hand_back: more than 1000 ids')
end
local count = 0
-- Walk backwards so that LPUSH leaves them in their original order.
for i = #ARGV, 1, -1 do
  if redis.call('HDEL', KEYS[2], ARGV[i]) == 1 then
    local rec = redis.call('HGET', KEYS[1], ARGV[i])
    if rec then
      redis.call('LPUSH', KEYS[4 + rec_priority(rec)], ARGV[i])
      count = count + 1
    end
  end
end
if count > 0 then notify(KEYS[3]) end
return count
