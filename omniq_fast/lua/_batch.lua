-- Included by the *_batch scripts ("--@include _batch"), after _lib.lua.

-- Job engines (the *_batch scripts) -------------------------------------------------------
-- Each engine does the work of n consecutive single calls (enqueue, reserve, heartbeat,
-- ack_success, ack_fail) at one now_ms and leaves exactly the keyspace those n calls would
-- leave. What cannot change during the call is read once; a step whose outcome depends on
-- an earlier job of the same call stays per job, in order; a key the call only adds to, or
-- only takes from, gets its writes as one command at the end, in call order; stats changes
-- are replayed exactly (floors included) and applied once. The single scripts keep their
-- direct code: for one job this bookkeeping costs more than it saves.
--
-- Built on demand (local jobs = job_engines()): a script's closures are made anew on every
-- call, and scripts that need none of these should not pay for making them.
local function job_engines()
  local BATCH_MAX = 1000

  -- The batch scripts' size checks: ARGV is `head` values (the count n second) then `width`
  -- per job. Returns n, or nil and the reply to give instead.
  local function batch_size(head, width)
    local n = tonumber(ARGV[2] or "")
    if n == nil or n ~= math.floor(n) or n < 0 then return nil, {"ERR", "BAD_ARGS"} end
    if n > BATCH_MAX then return nil, {"ERR", "BATCH_TOO_LARGE", tostring(BATCH_MAX)} end
    if #ARGV ~= head + width * n then return nil, {"ERR", "BAD_ARGS"} end
    return n, nil
  end

  -- Stats changes of many calls, per field: {net change, lowest point of the running total}.
  -- Applying the lowest point first (floored at zero) and then the rest gives, from any start
  -- >= 0, what applying the changes one by one gives. A field some change touched is written
  -- even when the changes cancel out, as the calls would have created it.
  local function tally(t, field, d)
    if d == 0 then return end
    local f = t[field]
    if f == nil then
      t[field] = {d, math.min(d, 0)}
    else
      f[1] = f[1] + d
      if f[1] < f[2] then f[2] = f[1] end
    end
  end

  local function tally_apply(t)
    for _, field in ipairs(STAT_FIELDS) do
      local f = t[field]
      if f then
        local net, low = f[1], f[2]
        if low < 0 then stat_add(field, low) end
        if net > low then stat_add(field, net - low) end
        if net == 0 and low == 0 then redis.call("HINCRBY", K_STATS, field, 0) end
      end
    end
  end

  -- A multi-member write collected during a call: lane_cmd("RPUSH", key), lane_add(c, id)
  -- per job, lane_send(c) at the end. Long ones go out in pieces (Lua's unpack takes at most
  -- 8000 values); only keys no step of the call reads are written this way.
  local LANE_CHUNK = 2000

  local function lane_cmd(...)
    local c = {...}
    c.head = #c
    return c
  end

  local function lane_send(c)
    if #c > c.head then
      redis.call(unpack(c))
      for j = #c, c.head + 1, -1 do c[j] = nil end
    end
  end

  local function lane_add(c, member)
    c[#c + 1] = member
    if #c >= LANE_CHUNK then lane_send(c) end
  end

  -- The same for ZADD: one entry per member, with the last score given (what adding them one
  -- by one leaves), sent in reverse. Ids mostly arrive in ascending order (ULIDs, FIFO lanes)
  -- and a small zset (a listpack) takes members several times cheaper in descending order.
  -- At most 1000 members (one per job), so one command.
  local function zadd_lane(key)
    return {key = key, at = {}}
  end

  local function zadd_put(z, score, member)
    local i = z.at[member]
    if i then
      z[i] = score
    else
      i = #z + 1
      z.at[member] = i
      z[i], z[i + 1] = score, member
    end
  end

  local function zadd_send(z)
    if #z == 0 then return end
    local args = {"ZADD", z.key}
    for i = #z - 1, 1, -2 do
      args[#args + 1] = z[i]
      args[#args + 1] = z[i + 1]
    end
    redis.call(unpack(args))
  end

  -- Offer several groups at one score (ZADD NX), counting the new offers in groups_ready.
  local function offer_groups(gids, score, t)
    if #gids == 0 then return end
    local args = {"ZADD", K_READY, "NX"}
    for _, gid in ipairs(gids) do
      args[#args + 1] = score
      args[#args + 1] = gid
    end
    tally(t, "groups_ready", redis.call(unpack(args)))
  end

  -- A group as one call sees it, read once (one MGET): its limit, whether the limit key
  -- exists, its inflight count as the call changes it, and how many jobs the call took.
  local function group_info(groups, gid)
    local g = groups[gid]
    if g == nil then
      local v = redis.call("MGET", group_key(gid, "limit"), group_key(gid, "inflight"))
      local cap = to_int(v[1])
      if cap <= 0 then cap = 1 end
      g = {gid = gid, has_limit = v[1] ~= false, cap = cap, running = to_int(v[2]), taken = 0}
      groups[gid] = g
      groups[#groups + 1] = g
    end
    return g
  end

  -- Group slots given back by jobs that stopped running, counted per gid in `released`.
  local function count_release(released, gid)
    if not gid or gid == "" then return end
    local c = released[gid]
    if c == nil then
      released[#released + 1] = gid
      released[gid] = 1
    else
      released[gid] = c + 1
    end
  end

  -- One DECRBY per group replays its floor-at-zero DECRs. Nothing else in these calls moves
  -- inflight, the limit or the group's list, so inflight only falls and the last release
  -- sees the lowest value: the group is offered (at now, NX) iff that one finds a free slot
  -- while the group has queued jobs.
  local function release_groups(released, now, t)
    local offers = {}
    for _, gid in ipairs(released) do
      local key = group_key(gid, "inflight")
      local running = redis.call("DECRBY", key, released[gid])
      if running < 0 then
        redis.call("SET", key, "0")
        running = 0
      end
      if running < group_cap(gid) and redis.call("LLEN", group_key(gid, "wait")) > 0 then
        offers[#offers + 1] = gid
      end
    end
    offer_groups(offers, now, t)
  end

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

  -- The lease checks of ack_success and ack_fail, in protocol order; `job` is the HMGET of
  -- the job hash starting with lease_token. Returns the error reason or nil (then the id has
  -- been taken out of `active`).
  local function lease_refusal(id, token, job)
    if token == nil or token == "" then return "TOKEN_REQUIRED" end
    if job[1] ~= token then return "TOKEN_MISMATCH" end
    if redis.call("ZREM", K_ACTIVE, id) ~= 1 then return "NOT_ACTIVE" end
    return nil
  end

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

  return {
    BATCH_MAX = BATCH_MAX, batch_size = batch_size, enqueue_jobs = enqueue_jobs,
    reserve_jobs = reserve_jobs, extend_leases = extend_leases, complete_jobs = complete_jobs,
    fail_jobs = fail_jobs
  }
end
