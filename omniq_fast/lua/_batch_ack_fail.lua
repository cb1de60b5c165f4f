-- Included by ack_fail_batch: the ack_fail engine.

-- ack_fail n leases; lease_at(i) gives job i's id, token and error ("" or nil: none).
-- Returns 2 reply fields per job: "RETRY", due_ms | "FAILED", "" | "ERR", reason.
-- Each job is retried after its backoff, or failed for good once max_attempts (<= 0
-- counts as 1) attempts are used; the lanes they go to are written once, at the end.
local MAX_ERROR_BYTES = 4096

local function fail_jobs(now, n, lease_at)
  local stamp = tostring(now)
  local t, released, out, settled = {}, {}, {}, false
  local idx_active = lane_cmd("ZREM", BASE .. ":idx:active")
  local idx_failed = zadd_lane(BASE .. ":idx:failed")
  local failed = lane_cmd("LPUSH", K_FAILED)
  local idx_delayed = zadd_lane(BASE .. ":idx:delayed")
  local delayed = zadd_lane(K_DELAYED)
  for i = 1, n do
    local id, token, message = lease_at(i)
    local jk = job_key(id)
    local job = {}
    if token ~= nil and token ~= "" then
      job = redis.call("HMGET", jk, "lease_token", "gid", "attempt", "max_attempts",
                       "backoff_ms")
    end
    local reason = lease_refusal(id, token, job)
    if reason then
      out[2 * i - 1], out[2 * i] = "ERR", reason
    else
      settled = true
      local fields = {"HSET", jk, "lease_token", "", "lock_until_ms", "", "updated_ms", stamp}
      if message and message ~= "" then
        -- Lua strings are bytes, so the cut may split a UTF-8 character, as upstream does.
        fields[9], fields[10] = "last_error", string.sub(message, 1, MAX_ERROR_BYTES)
        fields[11], fields[12] = "last_error_ms", stamp
      end
      tally(t, "active", -1)
      count_release(released, job[2])
      lane_add(idx_active, id)
      local most = to_int(job[4])
      if most <= 0 then most = 1 end
      local k = #fields
      if to_int(job[3]) >= most then
        fields[k + 1], fields[k + 2], fields[k + 3], fields[k + 4] =
          "state", "failed", "failed_ms", stamp
        zadd_put(idx_failed, now, id)
        lane_add(failed, id)
        tally(t, "failed", 1)
        out[2 * i - 1], out[2 * i] = "FAILED", ""
      else
        local due = now + to_int(job[5])
        fields[k + 1], fields[k + 2], fields[k + 3], fields[k + 4] =
          "state", "delayed", "due_ms", tostring(due)
        zadd_put(idx_delayed, now, id)
        zadd_put(delayed, due, id)
        tally(t, "delayed", 1)
        out[2 * i - 1], out[2 * i] = "RETRY", tostring(due)
      end
      redis.call(unpack(fields))
    end
  end
  lane_send(idx_active)
  zadd_send(idx_failed)
  lane_send(failed)
  zadd_send(idx_delayed)
  zadd_send(delayed)
  release_groups(released, now, t)
  tally_apply(t)
  if settled then stat_touch(now, "last_finish_ms") end
  return out
end
