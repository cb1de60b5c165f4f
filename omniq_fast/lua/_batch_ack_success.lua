-- Included by ack_success_batch: the ack_success engine.

local KEEP_COMPLETED = 100

-- ack_success n leases; lease_at(i) gives job i's id and token. Returns one reply field per
-- job: "OK" or the error reason.
-- The completed list keeps the 100 newest ids: each success pushes left and pops from the
-- right what is past 100, deleting those jobs. The popped ids are known in advance (the
-- list's right end, then this call's own successes), so the list gets one LPUSH and one
-- LTRIM; a popped id's hash counts as gone for the checks of later jobs in the call.
local function complete_jobs(now, n, lease_at)
  local stamp = tostring(now)
  local t, released, out = {}, {}, {}
  local done, fresh, gone, trimmed = {}, {}, {}, {}
  local kept, right_end
  local idx_active = lane_cmd("ZREM", BASE .. ":idx:active")
  local idx_trim = lane_cmd("ZREM", BASE .. ":idx:completed")
  local dels = lane_cmd("DEL")
  for i = 1, n do
    local id, token = lease_at(i)
    local jk = job_key(id)
    local job = {}
    if token ~= nil and token ~= "" and not gone[id] then
      job = redis.call("HMGET", jk, "lease_token", "gid")
    end
    local reason = lease_refusal(id, token, job)
    if reason then
      out[i] = reason
    else
      redis.call("HSET", jk, "state", "completed", "updated_ms", stamp, "completed_ms", stamp,
                 "lease_token", "", "lock_until_ms", "")
      lane_add(idx_active, id)
      tally(t, "active", -1)
      count_release(released, job[2])
      done[#done + 1] = id
      fresh[id] = true
      if kept == nil then
        kept = redis.call("LLEN", K_COMPLETED)
        -- At most n - i + 1 successes from here, so at most this many of today's ids pop.
        local m = math.min(kept, kept + (n - i + 1) - KEEP_COMPLETED)
        right_end = m > 0 and redis.call("LRANGE", K_COMPLETED, -m, -1) or {}
      end
      while kept + #done - #trimmed > KEEP_COMPLETED do
        local p = #trimmed + 1
        local old
        if p <= #right_end then old = right_end[#right_end - p + 1] else old = done[p - kept] end
        trimmed[p] = old
        gone[old], fresh[old] = true, nil
        lane_add(idx_trim, old)
        lane_add(dels, job_key(old))
      end
      out[i] = "OK"
    end
  end
  if #done == 0 then return out end
  lane_send(idx_active)
  lane_send(idx_trim)
  lane_send(dels)
  local idx_done = zadd_lane(BASE .. ":idx:completed")
  local pushed = lane_cmd("LPUSH", K_COMPLETED)
  for _, id in ipairs(done) do
    if fresh[id] then zadd_put(idx_done, now, id) end
    lane_add(pushed, id)
  end
  zadd_send(idx_done)
  lane_send(pushed)
  if #trimmed > 0 then redis.call("LTRIM", K_COMPLETED, 0, KEEP_COMPLETED - 1) end
  release_groups(released, now, t)
  tally_apply(t)
  redis.call("HSET", K_STATS, "completed_kept", tostring(kept + #done - #trimmed),
             "last_activity_ms", stamp, "last_finish_ms", stamp)
  return out
end
