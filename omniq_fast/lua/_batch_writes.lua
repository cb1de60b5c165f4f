-- Included after _batch by the job engines: the writes a call collects and sends once,
-- and its stats changes, replayed exactly.

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
