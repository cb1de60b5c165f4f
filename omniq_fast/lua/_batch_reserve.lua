-- Included by reserve_batch: the reserve engine.

-- Up to max_n consecutive reserves at now, each trying the lane lane:rr names first. Stops
-- at the first that finds no job; that call's side effects on groups:ready stay, as they
-- would. Returns the reply fields (7 per job) and the number of jobs.
local function reserve_jobs(now, max_n)
  local t, groups = {}, {}
  local ready_empty = false
  local wait_head, wait_used = nil, 0

  -- A group is offered in groups:ready while it may run one more job. Bounded, so groups
  -- found at their limit cannot keep the script spinning.
  local function pop_grouped()
    if ready_empty then return nil end -- nothing refills groups:ready during the call
    for _ = 1, 10 do
      local head = redis.call("ZPOPMIN", K_READY)
      if #head == 0 then
        ready_empty = true
        return nil
      end
      local gid = head[1]
      if gid ~= "" then
        tally(t, "groups_ready", -1)
        local g = group_info(groups, gid)
        if g.running >= g.cap then
          -- Offer it again just after now, behind the groups that can run.
          tally(t, "groups_ready", offer_group(gid, now + 1))
        elseif g.len ~= 0 then
          local list = group_key(gid, "wait")
          local id = redis.call("LPOP", list)
          if id then
            g.running, g.taken = g.running + 1, g.taken + 1
            if g.len then g.len = g.len - 1 end
            tally(t, "group_waiting", -1)
            tally(t, "waiting_total", -1)
            if g.running < g.cap then
              if g.len == nil then g.len = redis.call("LLEN", list) end
              if g.len > 0 then tally(t, "groups_ready", offer_group(gid, now)) end
            end
            return id
          end
          g.len = 0
        end
      end
    end
    return nil
  end

  -- The ungrouped lane: each reserve takes at most one id, so the first look reads as many
  -- as there are reserves left, and one LTRIM drops the taken ones at the end.
  local function pop_ungrouped(left)
    local id
    if wait_head == nil then
      if left == 1 then
        id = redis.call("LPOP", K_WAIT)
        wait_head = {}
      else
        wait_head = redis.call("LRANGE", K_WAIT, 0, left - 1)
      end
    end
    if not id then
      if wait_used >= #wait_head then return nil end
      wait_used = wait_used + 1
      id = wait_head[wait_used]
    end
    tally(t, "waiting", -1)
    tally(t, "waiting_total", -1)
    return id
  end

  local rr_key = BASE .. ":lane:rr"
  local rr = to_int(redis.call("GET", rr_key))
  local ids = {}
  while #ids < max_n do
    local id
    if rr == 0 then
      id = pop_grouped() or pop_ungrouped(max_n - #ids)
    else
      id = pop_ungrouped(max_n - #ids) or pop_grouped()
    end
    if not id then break end
    ids[#ids + 1] = id
    if rr == 0 then rr = 1 else rr = 0 end
  end
  if wait_used > 0 then redis.call("LTRIM", K_WAIT, wait_used, -1) end
  for _, g in ipairs(groups) do
    if g.taken > 0 then redis.call("INCRBY", group_key(g.gid, "inflight"), g.taken) end
  end

  local k = #ids
  local out = {}
  if k > 0 then
    redis.call("SET", rr_key, tostring(rr))
    -- One INCRBY for the batch: call i would have drawn seq = last - k + i.
    local last = redis.call("INCRBY", BASE .. ":lease:seq", k)
    local stamp = tostring(now)
    local idx_wait = lane_cmd("ZREM", BASE .. ":idx:wait")
    local idx_active = zadd_lane(BASE .. ":idx:active")
    local active = zadd_lane(K_ACTIVE)
    for i, id in ipairs(ids) do
      -- Per job and in order: an id queued twice is leased twice, the second time
      -- reading what the first wrote.
      local jk = job_key(id)
      local job = redis.call("HMGET", jk, "payload", "timeout_ms", "attempt", "max_attempts",
                             "gid", "first_started_ms")
      local lock_until = now + lease_ms(job[2])
      local attempt = to_int(job[3]) + 1
      local token = redis.sha1hex(id .. ":" .. stamp .. ":" .. tostring(last - k + i))
      local fields = {"HSET", jk, "state", "active", "attempt", tostring(attempt),
                      "lock_until_ms", tostring(lock_until), "lease_token", token,
                      "updated_ms", stamp, "last_started_ms", stamp}
      if not job[6] or job[6] == "" then
        fields[#fields + 1] = "first_started_ms"
        fields[#fields + 1] = stamp
      end
      redis.call(unpack(fields))
      lane_add(idx_wait, id)
      zadd_put(idx_active, now, id)
      zadd_put(active, lock_until, id)
      -- A job hash deleted behind the queue's back still leases; its fields read empty.
      local n = #out
      out[n + 1], out[n + 2], out[n + 3] = id, job[1] or "", tostring(lock_until)
      out[n + 4], out[n + 5] = tostring(attempt), tostring(to_int(job[4]))
      out[n + 6], out[n + 7] = job[5] or "", token
    end
    lane_send(idx_wait)
    zadd_send(idx_active)
    zadd_send(active)
    tally(t, "active", k)
  end
  tally_apply(t)
  if k > 0 then stat_touch(now, "last_reserve_ms") end
  return out, k
end
