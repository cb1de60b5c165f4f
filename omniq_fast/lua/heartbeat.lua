-- heartbeat: extend a held lease.
-- ARGV: job_id, now_ms, lease_token
-- Reply: {"OK", lock_until_ms} | {"ERR", "TOKEN_REQUIRED" | "TOKEN_MISMATCH" | "NOT_ACTIVE"}
local id, now = ARGV[1], to_int(ARGV[2])

local err = lease_error(id, ARGV[3])
if err then return err end
local current = redis.call("ZSCORE", K_ACTIVE, id)
if not current then return {"ERR", "NOT_ACTIVE"} end

-- Extends from the later of the current deadline and now, so frequent heartbeats push the
-- deadline past now + timeout (an upstream quirk kept on purpose, PROTOCOL.md §7).
local jk = job_key(id)
local timeout = lease_ms(redis.call("HGET", jk, "timeout_ms"))
local lock_until = math.max(to_int(current), now) + timeout
redis.call("HSET", jk, "lock_until_ms", tostring(lock_until), "updated_ms", tostring(now))
redis.call("ZADD", K_ACTIVE, lock_until, id)
return {"OK", tostring(lock_until)}
