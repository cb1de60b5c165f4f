--@include _admin
-- retry_failed (PROTOCOL.md §5): queue one terminally failed job again, from attempt 0.
-- KEYS[1]  anchor "{Q}:meta"
-- ARGV     job_id, now_ms
-- Reply    {"OK"} | {"ERR", "NO_JOB"} | {"ERR", "NOT_FAILED"}

-- now_ms is read as a number, so "0012" is written as 12, as upstream does.
local job_id, now_ms = ARGV[1], tonumber(ARGV[2])

local admin = admin_helpers()
local deltas = {}
local reason = admin.requeue_failed(job_id, now_ms, true, deltas)
if reason then return {"ERR", reason} end

admin.stat_apply_retry(deltas)
stat_touch(now_ms)
return {"OK"}
