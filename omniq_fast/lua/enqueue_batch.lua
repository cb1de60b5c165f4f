--@include _batch
--@include _batch_writes
--@include _batch_groups
--@include _batch_enqueue
-- enqueue_batch: n enqueues at one now_ms, leaving what n single enqueue calls would.
-- ARGV: now_ms, n, then per job: job_id, payload, max_attempts, timeout_ms, backoff_ms,
--       due_ms, gid ("" for none), group_limit
-- Reply: {"OK", written, i1, i2...} where written counts the jobs queued and i1, i2... are
--        the 1-based positions of the jobs not written because their id exists (what single
--        enqueue calls answer DUPLICATE for: an earlier job of this call counts too)
--        | {"ERR", "BATCH_TOO_LARGE", "1000"} | {"ERR", "BAD_ARGS"}
local n, refusal = batch_size(2, 8)
if refusal then return refusal end
local duplicates = enqueue_jobs(to_int(ARGV[1]), n, function(i)
  local first = 3 + 8 * (i - 1)
  return unpack(ARGV, first, first + 7)
end)
local reply = {"OK", tostring(n - #duplicates)}
for _, i in ipairs(duplicates) do reply[#reply + 1] = tostring(i) end
return reply
