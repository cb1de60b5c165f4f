--@include _admin
-- retry_failed_batch (PROTOCOL.md §5): retry_failed for up to 100 ids in one call.
-- KEYS[1]  anchor "{Q}:meta"
-- ARGV     now_ms, count, id1 .. id<count>
-- Reply    flat per-id results: id, "OK"  or  id, "ERR", reason
--          (BAD_JOB_ID for "", NO_JOB, NOT_FAILED);
--          {} when count <= 0, {"ERR", "BATCH_TOO_LARGE", "100"}, {"ERR", "BAD_ARGS"}

-- now_ms is read as a number, so "0012" is written as 12, as upstream does.
local now_ms = tonumber(ARGV[1])
local admin = admin_helpers()
local count, refusal = admin.batch_count(ARGV[2])
if refusal then return refusal end
if #ARGV < 2 + count then return {"ERR", "BAD_ARGS"} end

local deltas = {}
local out, retried = admin.each_id(count, function(id)
  -- Unlike retry_failed, `active` is left alone here (PROTOCOL.md §7).
  return admin.requeue_failed(id, now_ms, false, deltas)
end)

-- Counters move once for the whole batch; an all-refused batch is not activity.
admin.stat_apply_retry(deltas)
if retried > 0 then stat_touch(now_ms) end
return out
