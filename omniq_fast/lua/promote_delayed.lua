-- promote_delayed: move up to max_promote delayed jobs whose due time has come to their
-- ready lane (their group's list, or wait).
-- ARGV: now_ms, max_promote
-- Reply: {"OK", count}
local now = to_int(ARGV[1])
local ids = redis.call("ZRANGEBYSCORE", K_DELAYED, "-inf", now, "LIMIT", 0, to_int(ARGV[2]))

local deltas = {delayed = 0, waiting = 0, group_waiting = 0, waiting_total = 0, groups_ready = 0}
local moved = 0
for _, id in ipairs(ids) do
  if redis.call("ZREM", K_DELAYED, id) == 1 then
    moved = moved + 1
    local jk = job_key(id)
    redis.call("HSET", jk, "state", "wait", "updated_ms", tostring(now))
    idx_move(id, "delayed", "wait", now)
    deltas.delayed = deltas.delayed - 1
    deltas.waiting_total = deltas.waiting_total + 1
    local gid = redis.call("HGET", jk, "gid")
    if gid and gid ~= "" then
      redis.call("RPUSH", group_key(gid, "wait"), id)
      deltas.group_waiting = deltas.group_waiting + 1
      if group_running(gid) < group_cap(gid) then
        deltas.groups_ready = deltas.groups_ready + offer_group(gid, now)
      end
    else
      redis.call("RPUSH", K_WAIT, id)
      deltas.waiting = deltas.waiting + 1
    end
  end
end

if moved > 0 then
  stat_apply(deltas)
  stat_touch(now)
end
return {"OK", tostring(moved)}
