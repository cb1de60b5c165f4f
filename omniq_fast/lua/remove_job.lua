--@include _admin
-- remove_job (PROTOCOL.md §5): delete one job that is idle in the given lane.
-- KEYS[1]  anchor "{Q}:meta"
-- ARGV     job_id, lane (wait | delayed | failed | completed | gwait)
-- Reply    {"OK"} | {"ERR", reason}, reason one of NO_JOB, ACTIVE, LANE_MISMATCH, NOT_IN_LANE

local job_id, lane = ARGV[1], ARGV[2]

local deltas = {}
local reason = admin_helpers().remove_idle_job(job_id, lane, deltas, true)
if reason then return {"ERR", reason} end

stat_apply(deltas)
-- This script takes no now_ms, so activity is stamped from the server clock, at the
-- whole-second resolution upstream uses (PROTOCOL.md §7).
local t = redis.call("TIME")
stat_touch(tonumber(t[1]) * 1000)
return {"OK"}
