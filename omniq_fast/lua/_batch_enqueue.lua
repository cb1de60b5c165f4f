-- Included by enqueue_batch: the enqueue engine.

-- enqueue n jobs at now. job_at(i) gives job i's id, payload, max_attempts, timeout_ms,
-- backoff_ms, due_ms, gid ("" or nil: none) and group_limit, as sent. A job whose id
-- exists (its hash, or an earlier job of this call) is skipped, as enqueue skips it.
-- Returns the positions of the skipped jobs.
local function enqueue_jobs(now, n, job_at)
  local duplicates, seen = {}, {}
  if n == 0 then return duplicates end
  local stamp = tostring(now)
  local t, groups, offers, lists = {}, {}, {}, {}
  local wait = lane_cmd("RPUSH", K_WAIT)
  local idx_wait = zadd_lane(BASE .. ":idx:wait")
  local delayed = zadd_lane(K_DELAYED)
  local idx_delayed = zadd_lane(BASE .. ":idx:delayed")
  local grouped, n_delayed, n_grouped, n_ungrouped = false, 0, 0, 0
  -- Jobs of one call mostly share their settings: each distinct one is converted once.
  local texts = {}
  local function int_text(v)
    v = v or ""
    local text = texts[v]
    if text == nil then
      text = tostring(to_int(v))
      texts[v] = text
    end
    return text
  end
  for i = 1, n do
    local id, payload, max_attempts, timeout_ms, backoff_ms, due_ms, gid, group_limit = job_at(i)
    if seen[id] or redis.call("EXISTS", job_key(id)) == 1 then
      duplicates[#duplicates + 1] = i
    else
      seen[id] = true
      gid = gid or ""
      local due = to_int(due_ms)
      local later = due > now
      local fields = {"HSET", job_key(id), "id", id, "payload", payload,
                      "state", later and "delayed" or "wait", "attempt", "0",
                      "max_attempts", int_text(max_attempts), "timeout_ms", int_text(timeout_ms),
                      "backoff_ms", int_text(backoff_ms),
                      "created_ms", stamp, "updated_ms", stamp, "queued_ms", stamp,
                      "first_started_ms", "", "last_started_ms", "", "completed_ms", "",
                      "failed_ms", ""}
      local g
      if gid ~= "" then
        grouped = true
        fields[#fields + 1] = "gid"
        fields[#fields + 1] = gid
        local limit = to_int(group_limit)
        if limit > 0 or not later then g = group_info(groups, gid) end
        -- The first publisher to name a limit fixes it for the group.
        if limit > 0 and not g.has_limit then
          redis.call("SET", group_key(gid, "limit"), tostring(limit), "NX")
          g.has_limit, g.cap = true, limit
        end
      end
      if later then
        fields[#fields + 1] = "due_ms"
        fields[#fields + 1] = tostring(due)
        zadd_put(delayed, due, id)
        zadd_put(idx_delayed, now, id)
        n_delayed = n_delayed + 1
      elseif g then
        if g.list == nil then
          g.list = lane_cmd("RPUSH", group_key(gid, "wait"))
          lists[#lists + 1] = g.list
        end
        lane_add(g.list, id)
        zadd_put(idx_wait, now, id)
        n_grouped = n_grouped + 1
        -- inflight does not move here, so only the first offer of the call can add the gid.
        if not g.offered and g.running < g.cap then
          g.offered = true
          offers[#offers + 1] = gid
        end
      else
        lane_add(wait, id)
        zadd_put(idx_wait, now, id)
        n_ungrouped = n_ungrouped + 1
      end
      redis.call(unpack(fields))
    end
  end
  if #duplicates == n then return duplicates end  -- nothing written: touch nothing
  if grouped then redis.call("SET", BASE .. ":has_groups", "1") end
  for _, list in ipairs(lists) do lane_send(list) end
  lane_send(wait)
  zadd_send(idx_wait)
  zadd_send(delayed)
  zadd_send(idx_delayed)
  tally(t, "delayed", n_delayed)
  tally(t, "group_waiting", n_grouped)
  tally(t, "waiting", n_ungrouped)
  tally(t, "waiting_total", n_grouped + n_ungrouped)
  offer_groups(offers, now, t)
  tally_apply(t)
  stat_touch(now, "last_enqueue_ms")
  return duplicates
end
