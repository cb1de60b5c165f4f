--@include _batch
-- release_batch: give back leases a consumer took (prefetched) but never started, as if
-- they had never been reserved. For a prefetching consumer's graceful shutdown: the jobs
-- go back to the head of their lanes instead of waiting in `active` for reap_expired
-- (which would also count the attempt and apply the backoff).
-- ARGV: now_ms, n, then per lease: job_id, lease_token, in the order they were reserved
-- Reply: per lease "OK" or the error reason (TOKEN_REQUIRED, TOKEN_MISMATCH, NOT_ACTIVE),
--        checked as ack_success checks a lease; or {"ERR", "BATCH_TOO_LARGE", "1000"} |
--        {"ERR", "BAD_ARGS"}
--
-- The leases are undone from the last to the first, each job pushed back onto the head of
-- its lane (wait, or its group's list), so a lane gets back the order reserve took its jobs
-- in. A lease given twice is released at its later position and refused (TOKEN_MISMATCH)
-- at the earlier one. Per released job:
-- * out of `active` and `idx:active`, into `idx:wait`; attempt - 1 (not below 0);
--   state "wait"; onto its lane with stats waiting (ungrouped) or group_waiting (grouped)
--   and waiting_total + 1. A grouped job's inflight is decremented (floor at zero), and the
--   group is offered in groups:ready at now (NX, groups_ready + 1 when added) if that
--   leaves it a free slot.
-- * stats active - 1 (floor at zero); the deltas are applied once, at the end;
--   last_activity_ms = now if anything was released.
-- What a job looked like before it was reserved is partly not stored anywhere:
-- * A first start (attempt back to 0, and first_started_ms = last_started_ms: this lease
--   was the job's first start) gets back what publish wrote: lease_token and lock_until_ms
--   deleted, first_started_ms and last_started_ms "", updated_ms = queued_ms, and
--   idx:wait at queued_ms. Exact for a job published ready. A job published with a due
--   time entered wait when promote_delayed moved it (that time went into updated_ms and
--   idx:wait and is not stored); it gets queued_ms too.
-- * Any other job (a retry, or a failed job retry_failed put back at attempt 0):
--   lease_token and lock_until_ms "" (as ack_fail and reap_expired leave them),
--   updated_ms = now, idx:wait at now (the time it entered wait is not stored);
--   first_started_ms is kept, and last_started_ms keeps this lease's start (the previous
--   one is not stored).
-- * Not restored: lane:rr and lease:seq (other consumers may have reserved since), stats
--   last_reserve_ms, the scores in groups:ready (its members are restored: a group that
--   reserve offered again keeps that score, one offered here gets now), and what reserve
--   created: a group's inflight key, or a stats counter such as active, stays at "0".
local n, refusal = batch_size(2, 2)
if refusal then return refusal end
local now = to_int(ARGV[1])
local stamp = tostring(now)

local out = {}
local deltas = {waiting = 0, group_waiting = 0, waiting_total = 0, active = 0,
                groups_ready = 0}
local ungrouped = {"LPUSH", K_WAIT}
local grouped, gids = {}, {}  -- per gid: {"LPUSH", list key, ids...}; gids in first-seen order
local idx_active = {"ZREM", BASE .. ":idx:active"}
local idx_wait = {"ZADD", BASE .. ":idx:wait"}

for i = n, 1, -1 do
  local id, token = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  local jk = job_key(id)
  -- The same checks, in the same order, as ack_success (PROTOCOL.md §5).
  local job = {}
  if token ~= "" then
    job = redis.call("HMGET", jk, "lease_token", "attempt", "gid", "queued_ms",
                     "first_started_ms", "last_started_ms")
  end
  if token == "" then
    out[i] = "TOKEN_REQUIRED"
  elseif job[1] ~= token then
    out[i] = "TOKEN_MISMATCH"
  elseif redis.call("ZREM", K_ACTIVE, id) ~= 1 then
    out[i] = "NOT_ACTIVE"
  else
    out[i] = "OK"
    local attempt = math.max(to_int(job[2]) - 1, 0)
    local first_start = attempt == 0 and (job[5] or "") == (job[6] or "")
    local entered
    if first_start then
      local queued = job[4] or ""
      redis.call("HDEL", jk, "lease_token", "lock_until_ms")
      redis.call("HSET", jk, "state", "wait", "attempt", "0", "first_started_ms", "",
                 "last_started_ms", "", "updated_ms", queued)
      entered = to_int(queued)
    else
      redis.call("HSET", jk, "state", "wait", "attempt", tostring(attempt), "lease_token", "",
                 "lock_until_ms", "", "updated_ms", stamp)
      entered = now
    end
    idx_active[#idx_active + 1] = id
    idx_wait[#idx_wait + 1] = entered
    idx_wait[#idx_wait + 1] = id
    local gid = job[3]
    if gid and gid ~= "" then
      local push = grouped[gid]
      if push == nil then
        push = {"LPUSH", group_key(gid, "wait")}
        grouped[gid] = push
        gids[#gids + 1] = gid
      end
      push[#push + 1] = id
      deltas.group_waiting = deltas.group_waiting + 1
    else
      ungrouped[#ungrouped + 1] = id
      deltas.waiting = deltas.waiting + 1
    end
    deltas.waiting_total = deltas.waiting_total + 1
    deltas.active = deltas.active - 1
  end
end

if deltas.waiting_total == 0 then return out end
-- At most 1000 ids per command (the batch cap), well within what unpack takes. No step
-- above reads these keys, so each gets its writes at once; one LPUSH of ids in the order
-- they were undone leaves what pushing them one by one leaves.
if #ungrouped > 2 then redis.call(unpack(ungrouped)) end
redis.call(unpack(idx_active))
redis.call(unpack(idx_wait))
local offers = {}
for _, gid in ipairs(gids) do
  local push = grouped[gid]
  redis.call(unpack(push))
  -- One DECRBY replays the group's floor-at-zero decrements: inflight only falls here, so
  -- some release found a free slot iff the last one did (and the list is not empty now).
  local key = group_key(gid, "inflight")
  local running = redis.call("DECRBY", key, #push - 2)
  if running < 0 then
    redis.call("SET", key, "0")
    running = 0
  end
  if running < group_cap(gid) then offers[#offers + 1] = gid end
end
for _, gid in ipairs(offers) do
  deltas.groups_ready = deltas.groups_ready + offer_group(gid, now)
end
stat_apply(deltas)
stat_touch(now)
return out
