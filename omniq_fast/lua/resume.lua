-- resume: let reserve hand out jobs again.
-- ARGV: none
-- Reply: integer, the number of keys deleted (1 if the queue was paused, else 0)
return redis.call("DEL", BASE .. ":paused")
