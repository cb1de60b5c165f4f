-- pause: stop reserve from handing out jobs (it answers PAUSED) until resume.
-- ARGV: none
-- Reply: the bulk string "OK"
redis.call("SET", BASE .. ":paused", "1")
return "OK"
