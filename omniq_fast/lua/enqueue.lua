-- enqueue: write a job hash and queue it: delayed if due later, else its group's list or wait.
-- ARGV: job_id, payload, max_attempts, timeout_ms, backoff_ms, now_ms, due_ms, gid ("" for
--       none), group_limit (<= 0: leave the group's limit alone)
-- Reply: {"OK", job_id} | {"DUPLICATE", job_id}
local id, payload = ARGV[1], ARGV[2]
local now = to_int(ARGV[6])
local due = to_int(ARGV[7])
local gid = ARGV[8] or ""
local group_limit = to_int(ARGV[9])
local jk = job_key(id)
local stamp = tostring(now)

-- A job id names one job for as long as its hash exists, whatever its state: publishing it
-- again writes nothing. This is omniq-fast's one deliberate divergence from the official
-- scripts (PROTOCOL.md §7: they overwrite the hash and queue the id a second time, which
-- runs the job again, refuses its acks and leaves the active counter wrong).
if redis.call("EXISTS", jk) == 1 then return {"DUPLICATE", id} end

redis.call("HSET", jk, "id", id, "payload", payload, "state", "wait", "attempt", "0",
           "max_attempts", tostring(to_int(ARGV[3])), "timeout_ms", tostring(to_int(ARGV[4])),
           "backoff_ms", tostring(to_int(ARGV[5])),
           "created_ms", stamp, "updated_ms", stamp, "queued_ms", stamp,
           "first_started_ms", "", "last_started_ms", "", "completed_ms", "", "failed_ms", "")

if gid ~= "" then
  redis.call("HSET", jk, "gid", gid)
  redis.call("SET", BASE .. ":has_groups", "1")
  -- The first publisher to name a limit fixes it for the group.
  if group_limit > 0 then
    redis.call("SET", group_key(gid, "limit"), tostring(group_limit), "NX")
  end
end

local deltas = {}
if due > now then
  redis.call("HSET", jk, "state", "delayed", "due_ms", tostring(due))
  redis.call("ZADD", K_DELAYED, due, id)
  redis.call("ZADD", BASE .. ":idx:delayed", now, id)
  deltas.delayed = 1
elseif gid ~= "" then
  redis.call("RPUSH", group_key(gid, "wait"), id)
  redis.call("ZADD", BASE .. ":idx:wait", now, id)
  deltas.group_waiting, deltas.waiting_total = 1, 1
  if group_running(gid) < group_cap(gid) then
    deltas.groups_ready = offer_group(gid, now)
  end
else
  redis.call("RPUSH", K_WAIT, id)
  redis.call("ZADD", BASE .. ":idx:wait", now, id)
  deltas.waiting, deltas.waiting_total = 1, 1
end
stat_apply(deltas)
stat_touch(now, "last_enqueue_ms")
return {"OK", id}
