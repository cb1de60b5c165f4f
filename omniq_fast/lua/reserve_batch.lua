--@include _batch
--@include _batch_writes
--@include _batch_groups
--@include _batch_reserve
-- reserve_batch: up to max_n reserves at one now_ms, stopping at the first that would find
-- no job; leaves what those single reserve calls would (lane order, lane:rr, tokens).
-- ARGV: now_ms, max_n (1..1000)
-- Reply: {"PAUSED"} | {"EMPTY"} | {"JOB", k, then per job: id, payload, lock_until_ms,
--        attempt, max_attempts, gid, lease_token} |
--        {"ERR", "BATCH_TOO_LARGE", "1000"} | {"ERR", "BAD_ARGS"}
local max_n = tonumber(ARGV[2] or "")
if max_n and max_n > BATCH_MAX then
  return {"ERR", "BATCH_TOO_LARGE", tostring(BATCH_MAX)}
end
if #ARGV ~= 2 or max_n == nil or max_n ~= math.floor(max_n) or max_n < 1 then
  return {"ERR", "BAD_ARGS"}
end
if redis.call("EXISTS", BASE .. ":paused") == 1 then return {"PAUSED"} end
local leased, k = reserve_jobs(to_int(ARGV[1]), max_n)
if k == 0 then return {"EMPTY"} end
return {"JOB", tostring(k), unpack(leased)}
