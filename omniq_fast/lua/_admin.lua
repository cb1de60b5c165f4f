-- Included by the retry and remove scripts ("--@include _admin"), after _lib.lua.

-- admin helpers (retry/remove) ------------------------------------------------------------
-- Used by retry_failed, retry_failed_batch, remove_job and remove_jobs_batch.
-- Used as: local admin = admin_helpers().
local function admin_helpers()
  local function add_delta(deltas, field, n) deltas[field] = (deltas[field] or 0) + n end

  -- Upstream's retry scripts update the counters in this order; it shows as the field order
  -- of a stats hash they create.
  local RETRY_STAT_FIELDS = {"failed", "waiting", "group_waiting", "waiting_total", "groups_ready"}

  local function stat_apply_retry(deltas)
    for _, field in ipairs(RETRY_STAT_FIELDS) do
      local d = deltas[field]
      if d ~= nil and d ~= 0 then stat_add(field, d) end
    end
  end

  -- The batch scripts' size checks. Upstream reads count with plain tonumber, so a
  -- non-number is a script error and a fraction is kept as is (a missing one is 0); we do
  -- the same. Returns the count, or nil and the reply to give instead.
  local function batch_count(raw)
    local count = tonumber(raw or "0")
    if count <= 0 then return nil, {} end
    if count > 100 then return nil, {"ERR", "BATCH_TOO_LARGE", "100"} end
    return count, nil
  end

  -- The per-id loop of the batch scripts: ids are ARGV[3 .. 2 + count]; `act(id)` returns
  -- nil when it did its work, else the reason it refused. Returns the flat reply and how
  -- many ids were acted on.
  local function each_id(count, act)
    local out, done = {}, 0
    for i = 1, count do
      local id = ARGV[2 + i]
      local reason = "BAD_JOB_ID"
      if id ~= "" then reason = act(id) end
      if reason then
        out[#out + 1] = id; out[#out + 1] = "ERR"; out[#out + 1] = reason
      else
        out[#out + 1] = id; out[#out + 1] = "OK"
        done = done + 1
      end
    end
    return out, done
  end

  -- Put a failed job back at the end of its ready lane. `clean_active` is false for the
  -- batch script, which upstream never made take the id out of `active` (PROTOCOL.md §7).
  -- Returns nil, or the reason the id was refused.
  local function requeue_failed(id, now_ms, clean_active, deltas)
    local jk = job_key(id)
    -- "No job" means no hash at all; a hash without a state is merely not failed.
    if redis.call("EXISTS", jk) == 0 then return "NO_JOB" end
    local job = redis.call("HMGET", jk, "state", "gid")
    if job[1] ~= "failed" then return "NOT_FAILED" end

    -- Scrub every place a stale copy of the id could sit, so it is queued exactly once.
    if clean_active then redis.call("ZREM", K_ACTIVE, id) end
    redis.call("ZREM", K_DELAYED, id)
    redis.call("LREM", K_WAIT, 0, id)
    redis.call("LREM", K_FAILED, 0, id)
    redis.call("ZREM", BASE .. ":idx:delayed", id)
    redis.call("ZREM", BASE .. ":idx:failed", id)

    -- Fields take the time as Lua prints it (tostring), scores the number itself.
    redis.call("HSET", jk, "state", "wait", "attempt", "0", "updated_ms", tostring(now_ms),
               "lease_token", "", "lock_until_ms", "", "due_ms", "", "failed_ms", "")
    redis.call("ZADD", BASE .. ":idx:wait", now_ms, id)
    local gid = job[2]
    if gid and gid ~= "" then
      redis.call("RPUSH", group_key(gid, "wait"), id)
      add_delta(deltas, "group_waiting", 1)
      if group_running(gid) < group_cap(gid) then
        add_delta(deltas, "groups_ready", offer_group(gid, now_ms))
      end
    else
      redis.call("RPUSH", K_WAIT, id)
      add_delta(deltas, "waiting", 1)
    end
    add_delta(deltas, "waiting_total", 1)
    add_delta(deltas, "failed", -1)
    return nil
  end

  -- What remove_job accepts: the state the job must be in, the idx zset it leaves and the
  -- stats counters that drop. `gwait` is the ready list of the job's own group.
  local REMOVABLE = {
    wait = {state = "wait", idx = "wait", counters = {"waiting", "waiting_total"}},
    delayed = {state = "delayed", idx = "delayed", counters = {"delayed"}},
    failed = {state = "failed", idx = "failed", counters = {"failed"}},
    completed = {state = "completed", idx = "completed", counters = {"completed_kept"}},
    gwait = {state = "wait", idx = "wait", counters = {"group_waiting", "waiting_total"}},
  }

  -- Take the id out of the lane's own list or zset; returns how many entries went.
  local function take_from_lane(lane, id, gid)
    if lane == "delayed" then return redis.call("ZREM", K_DELAYED, id) end
    local key
    if lane == "wait" then key = K_WAIT
    elseif lane == "failed" then key = K_FAILED
    elseif lane == "completed" then key = K_COMPLETED
    else key = group_key(gid, "wait") end
    return redis.call("LREM", key, 1, id)
  end

  -- After a job left a group's list, the group is offered (at score 0, so it goes first)
  -- only while it still has work and a free slot; otherwise it is withdrawn. Returns the
  -- change to the groups_ready counter.
  local function reoffer_group(gid)
    if redis.call("LLEN", group_key(gid, "wait")) > 0 and group_running(gid) < group_cap(gid) then
      return offer_group(gid, 0)
    end
    return -redis.call("ZREM", K_READY, gid)
  end

  -- Delete one job that is idle in `lane`. Returns nil on success, or the reason the id
  -- was refused. `eager_reoffer`: remove_job re-offers or withdraws a gwait job's group
  -- even when the id is not in the group's list (without counting it in groups_ready);
  -- the batch script does so only for ids it removed. Both as upstream.
  local function remove_idle_job(id, lane, deltas, eager_reoffer)
    local jk = job_key(id)
    if redis.call("EXISTS", jk) == 0 then return "NO_JOB" end
    if redis.call("ZSCORE", K_ACTIVE, id) then return "ACTIVE" end
    local job = redis.call("HMGET", jk, "state", "gid", "lease_token", "lock_until_ms")
    local spec = REMOVABLE[lane]
    local gid = job[2]
    if gid == false or gid == "" then gid = nil end
    if spec == nil or job[1] ~= spec.state or (lane == "gwait" and gid == nil) then
      return "LANE_MISMATCH"
    end
    -- A grouped job that still shows a lease may hold a group slot: give it back. Upstream
    -- does this before looking in the lane, so it happens even for NOT_IN_LANE (§7).
    if gid and ((job[3] and job[3] ~= "") or (job[4] and job[4] ~= "")) then
      decr_key_floor(group_key(gid, "inflight"))
    end
    local taken = take_from_lane(lane, id, gid)
    if taken == 0 then
      if lane == "gwait" and eager_reoffer then reoffer_group(gid) end
      return "NOT_IN_LANE"
    end
    redis.call("DEL", jk)
    redis.call("ZREM", BASE .. ":idx:" .. spec.idx, id)
    for _, field in ipairs(spec.counters) do add_delta(deltas, field, -1) end
    if lane == "gwait" then add_delta(deltas, "groups_ready", reoffer_group(gid)) end
    return nil
  end

  return {
    stat_apply_retry = stat_apply_retry, batch_count = batch_count, each_id = each_id,
    requeue_failed = requeue_failed, REMOVABLE = REMOVABLE,
    remove_idle_job = remove_idle_job
  }
end
