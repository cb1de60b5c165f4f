-- Shared prelude of every omniq-fast script (PROTOCOL.md §1-4).
-- The registry (omniq_fast/_scripts.py) prepends this file to each script before loading it,
-- so each EVALSHA body is self-contained while the helpers live in one place; it leaves out
-- the top-level functions the script never calls (each would be a closure made per call).
-- Layout it relies on (tests/test_scripts.py): a top-level "local function" is a one-liner
-- or ends at the next line that is "end" alone.

-- KEYS[1] is the anchor "{Q}:meta" (or "{cc:K}:meta"); every other key hangs off the base.
local BASE = string.sub(KEYS[1], 1, -6)
local K_STATS = BASE .. ":stats"

-- Lenient integer read: nil, "", or non-numeric read as 0; fractions are floored.
-- "nan" is non-numeric too: tonumber accepts it, and a NaN reaching ZADD errors out of the
-- script half-way (Redis does not roll back), stranding every job the call had popped.
local function to_int(v)
  local n = tonumber(v)
  if n == nil or n ~= n then return 0 end
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
