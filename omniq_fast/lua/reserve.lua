-- reserve: lease the next ready job, alternating between the grouped and ungrouped lanes.
-- ARGV: now_ms
-- Reply: {"PAUSED"} | {"EMPTY"} |
--        {"JOB", id, payload, lock_until_ms, attempt, max_attempts, gid, lease_token}
local now = to_int(ARGV[1])

if redis.call("EXISTS", BASE .. ":paused") == 1 then return {"PAUSED"} end

-- Pop from the grouped lane: a group is offered in groups:ready while it may run one
-- more job. Bounded, so groups found at their limit cannot keep the script spinning.
local function pop_grouped()
  for _ = 1, 10 do
    local head = redis.call("ZPOPMIN", K_READY)
    if #head == 0 then return nil end
    local gid = head[1]
    if gid ~= "" then
      stat_add("groups_ready", -1)
      local cap = group_cap(gid)
      if group_running(gid) >= cap then
        -- Offer it again just after now, behind the groups that can run.
        stat_add("groups_ready", offer_group(gid, now + 1))
      else
        local list = group_key(gid, "wait")
        local id = redis.call("LPOP", list)
        if id then
          local running = redis.call("INCR", group_key(gid, "inflight"))
          stat_add("group_waiting", -1)
          stat_add("waiting_total", -1)
          if running < cap and redis.call("LLEN", list) > 0 then
            stat_add("groups_ready", offer_group(gid, now))
          end
          return id
        end
      end
    end
  end
  return nil
end

local function pop_ungrouped()
  local id = redis.call("LPOP", K_WAIT)
  if not id then return nil end
  stat_add("waiting", -1)
  stat_add("waiting_total", -1)
  return id
end

local rr_key = BASE .. ":lane:rr"
local rr = to_int(redis.call("GET", rr_key))
local id
if rr == 0 then
  id = pop_grouped() or pop_ungrouped()
else
  id = pop_ungrouped() or pop_grouped()
end
if not id then return {"EMPTY"} end
redis.call("SET", rr_key, rr == 0 and "1" or "0")

local jk = job_key(id)
local job = redis.call("HMGET", jk, "payload", "timeout_ms", "attempt", "max_attempts", "gid",
                       "first_started_ms")
local lock_until = now + lease_ms(job[2])
local attempt = to_int(job[3]) + 1
local seq = redis.call("INCR", BASE .. ":lease:seq")
local stamp = tostring(now)
local token = redis.sha1hex(id .. ":" .. stamp .. ":" .. tostring(seq))

if not job[6] or job[6] == "" then redis.call("HSET", jk, "first_started_ms", stamp) end
redis.call("HSET", jk, "state", "active", "attempt", tostring(attempt),
           "lock_until_ms", tostring(lock_until), "lease_token", token,
           "updated_ms", stamp, "last_started_ms", stamp)
idx_move(id, "wait", "active", now)
redis.call("ZADD", K_ACTIVE, lock_until, id)
stat_add("active", 1)
stat_touch(now, "last_reserve_ms")

-- A job hash deleted behind the queue's back still leases; its reply fields read empty.
return {"JOB", id, job[1] or "", tostring(lock_until), tostring(attempt),
        tostring(to_int(job[4])), job[5] or "", token}
