--@include _batch
--@include _batch_writes
--@include _batch_groups
--@include _batch_finish
--@include _batch_ack_success
-- ack_success_batch: n ack_success calls at one now_ms, leaving what they would.
-- ARGV: now_ms, n, then per job: job_id, lease_token
-- Reply: per job "OK" or the error reason (TOKEN_REQUIRED, TOKEN_MISMATCH, NOT_ACTIVE);
--        or {"ERR", "BATCH_TOO_LARGE", "1000"} | {"ERR", "BAD_ARGS"}
local n, refusal = batch_size(2, 2)
if refusal then return refusal end
return complete_jobs(to_int(ARGV[1]), n, function(i)
  return ARGV[1 + 2 * i], ARGV[2 + 2 * i]
end)
