--@include _batch
--@include _batch_writes
--@include _batch_heartbeat
-- heartbeat_batch: n heartbeats at one now_ms, leaving what n single heartbeat calls would.
-- ARGV: now_ms, n, then per job: job_id, lease_token
-- Reply: per job "OK", lock_until_ms | "ERR", reason (TOKEN_REQUIRED, TOKEN_MISMATCH,
--        NOT_ACTIVE); or {"ERR", "BATCH_TOO_LARGE", "1000"} | {"ERR", "BAD_ARGS"}
local n, refusal = batch_size(2, 2)
if refusal then return refusal end
return extend_leases(to_int(ARGV[1]), n, function(i)
  return ARGV[1 + 2 * i], ARGV[2 + 2 * i]
end)
