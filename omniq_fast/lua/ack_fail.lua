-- ack_fail: end a leased job with an error: retry after its backoff, or fail it for good
-- once max_attempts (<= 0 counts as 1) attempts are used.
-- ARGV: job_id, now_ms, lease_token[, error]
-- Reply: {"RETRY", due_ms} | {"FAILED"} |
--        {"ERR", "TOKEN_REQUIRED" | "TOKEN_MISMATCH" | "NOT_ACTIVE"}
local MAX_ERROR_BYTES = 4096
local id, now = ARGV[1], to_int(ARGV[2])
local message = ARGV[4] or ""

local err = lease_error(id, ARGV[3])
if err then return err end
if redis.call("ZREM", K_ACTIVE, id) ~= 1 then return {"ERR", "NOT_ACTIVE"} end

local jk = job_key(id)
if message ~= "" then
  -- Lua strings are bytes, so the cut may split a UTF-8 character, as upstream does.
  redis.call("HSET", jk, "last_error", string.sub(message, 1, MAX_ERROR_BYTES),
             "last_error_ms", tostring(now))
end
local deltas = {active = -1}
deltas.groups_ready = release_group(redis.call("HGET", jk, "gid"), now)
local outcome = retry_or_fail(id, now, deltas)
stat_apply(deltas)
stat_touch(now, "last_finish_ms")

if outcome == "FAILED" then return {"FAILED"} end
return {"RETRY", tostring(outcome)}
