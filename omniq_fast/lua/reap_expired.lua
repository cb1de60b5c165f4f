-- reap_expired: take back up to max_reap leases whose deadline has passed; each job is
-- retried or failed as by ack_fail (without an error message).
-- ARGV: now_ms, max_reap
-- Reply: {"OK", count}
local now = to_int(ARGV[1])
local ids = redis.call("ZRANGEBYSCORE", K_ACTIVE, "-inf", now, "LIMIT", 0, to_int(ARGV[2]))

local deltas = {active = 0, groups_ready = 0}
local reaped = 0
for _, id in ipairs(ids) do
  if redis.call("ZREM", K_ACTIVE, id) == 1 then
    reaped = reaped + 1
    deltas.active = deltas.active - 1
    local jk = job_key(id)
    if redis.call("EXISTS", jk) == 0 then
      -- The job was deleted under its lease: only its index entry is left to clean.
      redis.call("ZREM", BASE .. ":idx:active", id)
    else
      redis.call("HSET", jk, "lease_token", "")
      local offered = release_group(redis.call("HGET", jk, "gid"), now)
      deltas.groups_ready = deltas.groups_ready + offered
      retry_or_fail(id, now, deltas)
    end
  end
end

stat_apply(deltas)
if reaped > 0 then stat_touch(now) end
return {"OK", tostring(reaped)}
