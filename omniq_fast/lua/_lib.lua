-- Shared prelude of every omniq-fast script (PROTOCOL.md §1-4).
-- The registry (omniq_fast/scripts.py) prepends this file to each script before loading it,
-- so each EVALSHA body is self-contained while the helpers live in one place.

-- KEYS[1] is the anchor "{Q}:meta" (or "{cc:K}:meta"); every other key hangs off the base.
local BASE = string.sub(KEYS[1], 1, -6)
local K_STATS = BASE .. ":stats"

-- Lenient integer read: nil, "", or non-numeric read as 0; fractions are floored.
local function to_int(v)
  local n = tonumber(v)
  if n == nil then return 0 end
  return math.floor(n)
end

-- Decrement a string counter, storing "0" instead of a negative result.
local function decr_key_floor(key)
  local n = redis.call("DECR", key)
  if n < 0 then
    redis.call("SET", key, "0")
    return 0
  end
  return n
end

-- Stats counters: increments are plain HINCRBY, decrements floor at zero.
local function stat_add(field, delta)
  if delta > 0 then
    redis.call("HINCRBY", K_STATS, field, delta)
  elseif delta < 0 then
    local n = redis.call("HINCRBY", K_STATS, field, delta)
    if n < 0 then redis.call("HSET", K_STATS, field, "0") end
  end
end

-- Many-job scripts accumulate deltas and apply each non-zero one once, in a fixed order.
local STAT_FIELDS = {"waiting", "group_waiting", "waiting_total", "active", "delayed",
                     "failed", "completed_kept", "groups_ready"}

local function stat_apply(deltas)
  for _, field in ipairs(STAT_FIELDS) do
    local d = deltas[field]
    if d ~= nil and d ~= 0 then stat_add(field, d) end
  end
end

local function stat_touch(now_ms, ...)
  local stamp = tostring(now_ms)
  local args = {"HSET", K_STATS, "last_activity_ms", stamp}
  for _, field in ipairs({...}) do
    args[#args + 1] = field
    args[#args + 1] = stamp
  end
  redis.call(unpack(args))
end

local function job_key(id) return BASE .. ":job:" .. id end
local function group_key(gid, part) return BASE .. ":g:" .. gid .. ":" .. part end

-- A group's concurrency limit: missing or <= 0 means 1.
local function group_cap(gid)
  local n = to_int(redis.call("GET", group_key(gid, "limit")))
  if n <= 0 then return 1 end
  return n
end

local function group_running(gid)
  return to_int(redis.call("GET", group_key(gid, "inflight")))
end

-- Offer a group to reserve (ZADD NX); returns 1 when it was not offered yet.
local function offer_group(gid, score)
  return redis.call("ZADD", BASE .. ":groups:ready", "NX", score, gid)
end

-- A lease's length: the job's timeout_ms, or 60 s when unset or not positive.
local function lease_ms(timeout_ms)
  local t = to_int(timeout_ms)
  if t <= 0 then return 60000 end
  return t
end

-- Numbers are written into hashes, strings and replies as Lua 5.1's tostring writes them
-- ("%.14g"), as the official scripts do: plain digits for epoch milliseconds, exponent form
-- past 14 digits. Zset scores stay numbers, which keeps them exact.

-- Lanes of a queue (PROTOCOL.md §2).
local K_WAIT = BASE .. ":wait"
local K_ACTIVE = BASE .. ":active"
local K_DELAYED = BASE .. ":delayed"
local K_FAILED = BASE .. ":failed"
local K_COMPLETED = BASE .. ":completed"
local K_READY = BASE .. ":groups:ready"

-- The idx:<lane> zsets record when a job entered its current lane, for monitoring pages.
local function idx_move(id, from_lane, to_lane, now_ms)
  redis.call("ZREM", BASE .. ":idx:" .. from_lane, id)
  redis.call("ZADD", BASE .. ":idx:" .. to_lane, now_ms, id)
end

-- A job that may run again: its group gets a slot back, and if the group still has
-- queued jobs it is offered to reserve. Returns the number of groups newly offered.
local function release_group(gid, now_ms)
  if not gid or gid == "" then return 0 end
  local running = decr_key_floor(group_key(gid, "inflight"))
  if running < group_cap(gid) and redis.call("LLEN", group_key(gid, "wait")) > 0 then
    return offer_group(gid, now_ms)
  end
  return 0
end

-- Put a job whose lease ended without success back in delayed for another attempt, or
-- in failed once its attempts are used up. The caller has already taken it out of
-- `active`; stats go into `deltas`. Returns "FAILED", or the retry's due time.
local function retry_or_fail(id, now_ms, deltas)
  local jk = job_key(id)
  local job = redis.call("HMGET", jk, "attempt", "max_attempts", "backoff_ms")
  local max_attempts = to_int(job[2])
  if max_attempts <= 0 then max_attempts = 1 end
  if to_int(job[1]) >= max_attempts then
    local stamp = tostring(now_ms)
    redis.call("HSET", jk, "state", "failed", "updated_ms", stamp, "failed_ms", stamp,
               "lease_token", "", "lock_until_ms", "")
    idx_move(id, "active", "failed", now_ms)
    redis.call("LPUSH", K_FAILED, id)
    deltas.failed = (deltas.failed or 0) + 1
    return "FAILED"
  end
  local due = now_ms + to_int(job[3])
  redis.call("HSET", jk, "state", "delayed", "due_ms", tostring(due),
             "updated_ms", tostring(now_ms), "lease_token", "", "lock_until_ms", "")
  idx_move(id, "active", "delayed", now_ms)
  redis.call("ZADD", K_DELAYED, due, id)
  deltas.delayed = (deltas.delayed or 0) + 1
  return due
end

-- The lease checks shared by heartbeat, ack_success and ack_fail, in protocol order
-- (the `active` check differs per script and comes after). Returns an error reply or nil.
local function lease_error(id, token)
  if token == nil or token == "" then return {"ERR", "TOKEN_REQUIRED"} end
  if redis.call("HGET", job_key(id), "lease_token") ~= token then
    return {"ERR", "TOKEN_MISMATCH"}
  end
  return nil
end


-- admin helpers (retry/remove) ------------------------------------------------------------
-- Used by retry_failed, retry_failed_batch, remove_job and remove_jobs_batch.

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
