-- Included by heartbeat_batch: the heartbeat engine.

-- heartbeat n leases; lease_at(i) gives job i's id and token. Returns 2 reply fields per
-- job: "OK", lock_until_ms | "ERR", reason.
local function extend_leases(now, n, lease_at)
  local stamp = tostring(now)
  local out, deadline = {}, {}
  local active = zadd_lane(K_ACTIVE)
  for i = 1, n do
    local id, token = lease_at(i)
    local a, b = "ERR", nil
    if token == nil or token == "" then
      b = "TOKEN_REQUIRED"
    else
      local jk = job_key(id)
      local job = redis.call("HMGET", jk, "lease_token", "timeout_ms")
      -- An id extended earlier in the call has its new deadline here, not yet in `active`.
      local current = job[1] == token and (deadline[id] or redis.call("ZSCORE", K_ACTIVE, id))
      if job[1] ~= token then
        b = "TOKEN_MISMATCH"
      elseif not current then
        b = "NOT_ACTIVE"
      else
        -- Extends from the later of the current deadline and now, so frequent heartbeats
        -- push the deadline past now + timeout (an upstream quirk kept, PROTOCOL.md §7).
        local lock_until = math.max(to_int(current), now) + lease_ms(job[2])
        redis.call("HSET", jk, "lock_until_ms", tostring(lock_until), "updated_ms", stamp)
        deadline[id] = lock_until
        zadd_put(active, lock_until, id)
        a, b = "OK", tostring(lock_until)
      end
    end
    out[2 * i - 1], out[2 * i] = a, b
  end
  zadd_send(active)
  return out
end
