-- ack_success: finish a leased job; keep the 100 newest completed jobs, delete older ones.
-- ARGV: job_id, now_ms, lease_token
-- Reply: {"OK"} | {"ERR", "TOKEN_REQUIRED" | "TOKEN_MISMATCH" | "NOT_ACTIVE"}
local KEEP_COMPLETED = 100
local id, now = ARGV[1], to_int(ARGV[2])

local err = lease_error(id, ARGV[3])
if err then return err end
if redis.call("ZREM", K_ACTIVE, id) ~= 1 then return {"ERR", "NOT_ACTIVE"} end

local jk = job_key(id)
local stamp = tostring(now)
redis.call("HSET", jk, "state", "completed", "updated_ms", stamp, "completed_ms", stamp,
           "lease_token", "", "lock_until_ms", "")
idx_move(id, "active", "completed", now)
local deltas = {active = -1}
deltas.groups_ready = release_group(redis.call("HGET", jk, "gid"), now)

redis.call("LPUSH", K_COMPLETED, id)
local kept = redis.call("LLEN", K_COMPLETED)
while kept > KEEP_COMPLETED do
  local old = redis.call("RPOP", K_COMPLETED)
  redis.call("ZREM", BASE .. ":idx:completed", old)
  redis.call("DEL", job_key(old))
  kept = kept - 1
end

stat_apply(deltas)
redis.call("HSET", K_STATS, "completed_kept", tostring(kept))
stat_touch(now, "last_finish_ms")
return {"OK"}
