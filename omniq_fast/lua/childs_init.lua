-- childs_init (PROTOCOL.md §5): start a parent's completion counter at `expected`.
-- KEYS[1]  anchor "{cc:K}:meta"
-- ARGV     expected
-- Reply    {"OK"} | {"ERR", "NO_EXPECTED" | "BAD_EXPECTED" | "ALREADY_INIT"}

local K_COUNT, K_DONE = BASE .. ":count", BASE .. ":done"

local raw = ARGV[1]
if raw == nil or raw == "" then return {"ERR", "NO_EXPECTED"} end
-- Lenient like upstream: anything Lua reads as a number is floored ("2.5" counts 2). Not
-- to_int: upstream accepts "nan" here (and stores it), and nothing here can trip on a NaN.
local expected = math.floor(tonumber(raw) or 0)
if expected <= 0 then return {"ERR", "BAD_EXPECTED"} end
-- Initialising twice would reset children that already reported.
if redis.call("EXISTS", K_COUNT) == 1 then return {"ERR", "ALREADY_INIT"} end

-- tostring, not a number argument: upstream's stored text is Lua's %.14g rendering.
redis.call("SET", K_COUNT, tostring(expected))
redis.call("DEL", K_DONE)
return {"OK"}
