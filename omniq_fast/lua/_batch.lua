-- Included by the *_batch scripts ("--@include _batch"), after _lib.lua; the other
-- _batch_*.lua files hold what only some of them use, each script naming the ones it needs.

-- Job engines (the *_batch scripts) -------------------------------------------------------
-- Each engine does the work of n consecutive single calls (enqueue, reserve, heartbeat,
-- ack_success, ack_fail) at one now_ms and leaves exactly the keyspace those n calls would
-- leave. What cannot change during the call is read once; a step whose outcome depends on
-- an earlier job of the same call stays per job, in order; a key the call only adds to, or
-- only takes from, gets its writes as one command at the end, in call order; stats changes
-- are replayed exactly (floors included) and applied once. The single scripts keep their
-- direct code: for one job this bookkeeping costs more than it saves.
--
-- One engine per file (_batch_enqueue.lua, ...): Lua makes a closure for every local
-- function of a script on every call, so a script builds only the engine and helpers it
-- includes.

local BATCH_MAX = 1000

-- The batch scripts' size checks: ARGV is `head` values (the count n second) then `width`
-- per job. Returns n, or nil and the reply to give instead.
local function batch_size(head, width)
  local n = tonumber(ARGV[2] or "")
  if n == nil or n ~= math.floor(n) or n < 0 then return nil, {"ERR", "BAD_ARGS"} end
  if n > BATCH_MAX then return nil, {"ERR", "BATCH_TOO_LARGE", tostring(BATCH_MAX)} end
  if #ARGV ~= head + width * n then return nil, {"ERR", "BAD_ARGS"} end
  return n, nil
end
