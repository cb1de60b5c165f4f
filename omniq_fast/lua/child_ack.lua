-- child_ack (PROTOCOL.md §5): one child reports done; counts down the parent's counter.
-- KEYS[1]  anchor "{cc:K}:meta"
-- ARGV     child_id
-- Reply    {"OK", remaining} | {"ERR", "CHILD_REQUIRED" | "NO_COUNTER"}

local K_COUNT, K_DONE = BASE .. ":count", BASE .. ":done"

local child = ARGV[1]
if child == nil or child == "" then return {"ERR", "CHILD_REQUIRED"} end
-- The counter is deleted when it reaches 0, so late or unknown acks land here.
if redis.call("EXISTS", K_COUNT) == 0 then return {"ERR", "NO_COUNTER"} end

-- The done set makes a retried child's ack count once.
if redis.call("SADD", K_DONE, child) == 1 then
  local left = redis.call("DECR", K_COUNT)
  if left <= 0 then
    -- The last child is the only one that ever sees 0 from a decrement.
    redis.call("DEL", K_COUNT, K_DONE)
    return {"OK", "0"}
  end
  return {"OK", tostring(left)}
end

local left = to_int(redis.call("GET", K_COUNT))
if left <= 0 then return {"OK", "0"} end
return {"OK", tostring(left)}
