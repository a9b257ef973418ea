#!lua flags=allow-oom
-- hand_back: active -> waiting, at the front of its priority, without
-- counting an attempt. A worker that shuts down returns the jobs it leased
-- but did not finish (or never started). Only leases the worker still holds
-- under their token are handed back: a job rescued meanwhile belongs to
-- whoever holds it now.
--
-- KEYS[1]      jobs     hash, id -> record
-- KEYS[2]      active   this worker's hash, id -> '<token>:<deadline ms>'
-- KEYS[3]      notify   wake-up list (at most one element)
-- KEYS[4..13]  waiting  lists, priority 0..9
-- ARGV[1..]    the leases, oldest first, in groups: token, count, that many
--              ids (at most 1000 ids in all)
-- Returns: the number of jobs handed back.

local ids, prefixes = lease_groups(1, 1000)
if not ids then
  return redis.error_reply('ERR plimsoll hand_back: bad lease groups')
end
if #ids == 0 then return 0 end
local leases = redis.call('HMGET', KEYS[2], unpack(ids))
local count = 0
-- Walk backwards so that LPUSH leaves them in their original order.
for i = #ids, 1, -1 do
  if lease_is(leases[i], prefixes[i]) then
    redis.call('HDEL', KEYS[2], ids[i])
    local rec = redis.call('HGET', KEYS[1], ids[i])
    if rec then
      redis.call('LPUSH', KEYS[4 + rec_priority(rec)], ids[i])
      count = count + 1
    end
  end
end
if count > 0 then notify(KEYS[3]) end
return count
