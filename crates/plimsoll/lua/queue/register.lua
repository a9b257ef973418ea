#!lua
-- register: adds a queue to the registry of queues, within its cap.
--
-- The registry is the one key outside every queue's hash tag, so this is the
-- only script that touches no queue key; on a cluster it runs on whichever
-- node serves the registry. Producers call it before a queue's first
-- enqueue (to learn whether the cap allows a new queue) and again now and
-- then while they enqueue, so that a registration a failover lost comes
-- back; a registry that cannot be reached never stops an enqueue.
--
-- KEYS[1]      queues   set of queue names
-- ARGV[1]      the queue's name
-- ARGV[2]      the most queues the registry may hold
-- ARGV[3]      '1': register it whatever the count (a queue the
--              application configured, which callers' queues must not lock
--              out); '0': within the cap
-- Returns: 1 when the queue is registered (now or already), 0 when the
-- registry is full and it is not.

if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 1
end
if ARGV[3] ~= '1' and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
