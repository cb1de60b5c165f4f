--@include _batch
--@include _batch_writes
--@include _batch_groups
--@include _batch_finish
--@include _batch_ack_fail
-- ack_fail_batch: n ack_fail calls at one now_ms, leaving what they would.
-- ARGV: now_ms, n, then per job: job_id, lease_token, error ("" for none)
-- Reply: per job "RETRY", due_ms | "FAILED", "" | "ERR", reason (TOKEN_REQUIRED,
--        TOKEN_MISMATCH, NOT_ACTIVE);
--        or {"ERR", "BATCH_TOO_LARGE", "1000"} | {"ERR", "BAD_ARGS"}
local n, refusal = batch_size(2, 3)
if refusal then return refusal end
return fail_jobs(to_int(ARGV[1]), n, function(i)
  local first = 3 * i
  return ARGV[first], ARGV[first + 1], ARGV[first + 2]
end)
