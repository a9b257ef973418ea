#!lua flags=no-writes
-- time: reads Redis' clock on the queue's own node, for the client to keep
-- its clock on Redis' time (crates/plimsoll/src/clock.rs). Nothing here
-- decides by the time: scripts still take "now" as an argument.
--
-- KEYS[1]  meta  not read; it routes the call to the queue's node on a
--                cluster, whose clock the queue's scripts are compared by
-- Returns: Redis' TIME, {seconds, microseconds}.

return redis.call('TIME')
