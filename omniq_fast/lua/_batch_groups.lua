-- Included after _batch_writes by the engines that offer groups or count their slots.

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
