-- Included after _batch_groups by the engines that end a lease (ack_success, ack_fail).

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

-- The lease checks of ack_success and ack_fail, in protocol order; `job` is the HMGET of
-- the job hash starting with lease_token. Returns the error reason or nil (then the id has
-- been taken out of `active`).
local function lease_refusal(id, token, job)
  if token == nil or token == "" then return "TOKEN_REQUIRED" end
  if job[1] ~= token then return "TOKEN_MISMATCH" end
  if redis.call("ZREM", K_ACTIVE, id) ~= 1 then return "NOT_ACTIVE" end
  return nil
end
