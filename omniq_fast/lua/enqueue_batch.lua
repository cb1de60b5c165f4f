--@include _batch
-- enqueue_batch: n enqueues at one now_ms, leaving what n single enqueue calls would.
-- ARGV: now_ms, n, then per job: job_id, payload, max_attempts, timeout_ms, backoff_ms,
--       due_ms, gid ("" for none), group_limit
-- Reply: {"OK", n} | {"ERR", "BATCH_TOO_LARGE", "1000"} | {"ERR", "BAD_ARGS"}
local jobs = job_engines()
local n, refusal = jobs.batch_size(2, 8)
if refusal then return refusal end
jobs.enqueue_jobs(to_int(ARGV[1]), n, function(i)
  local first = 3 + 8 * (i - 1)
  return unpack(ARGV, first, first + 7)
end)
return {"OK", tostring(n)}
