--@include _admin
-- remove_jobs_batch (PROTOCOL.md §5): remove_job for up to 100 ids of one lane.
-- KEYS[1]  anchor "{Q}:meta"
-- ARGV     lane, count, id1 .. id<count>[, now_ms]
-- Reply    flat per-id results: id, "OK"  or  id, "ERR", reason (BAD_JOB_ID for "",
--          NO_JOB, ACTIVE, LANE_MISMATCH, NOT_IN_LANE);
--          {} when count <= 0, {"ERR", "BATCH_TOO_LARGE", "100"}, {"ERR", "BAD_LANE"},
--          {"ERR", "BAD_ARGS"} (checked in that order)

local lane = ARGV[1]
local admin = admin_helpers()
local count, refusal = admin.batch_count(ARGV[2])
if refusal then return refusal end
if admin.REMOVABLE[lane] == nil then return {"ERR", "BAD_LANE"} end
if #ARGV < 2 + count then return {"ERR", "BAD_ARGS"} end
-- The official clients send no now_ms, so activity is then stamped 0 (PROTOCOL.md §7).
-- A given one is read as a number and stamped as Lua prints it, as upstream does (so an
-- unreadable one is stamped "nil").
local now_ms = 0
if ARGV[3 + count] ~= nil then now_ms = tonumber(ARGV[3 + count]) end

local deltas = {}
local out, removed = admin.each_id(count, function(id)
  return admin.remove_idle_job(id, lane, deltas, false)
end)

stat_apply(deltas)
if removed > 0 then stat_touch(now_ms) end
return out
