-- next_due: when the consumer's timers are next needed (read-only).
-- ARGV: none
-- Reply: {earliest delayed due_ms or "", earliest active lock_until_ms or ""}
-- An idle consumer that is told of every change (key tracking) promotes and reaps when the
-- server says something is due instead of every second.
local d = redis.call("ZRANGE", BASE .. ":delayed", 0, 0, "WITHSCORES")
local a = redis.call("ZRANGE", BASE .. ":active", 0, 0, "WITHSCORES")
return {d[2] or "", a[2] or ""}
