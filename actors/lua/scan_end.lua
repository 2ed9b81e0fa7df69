-- Scan ARGV[1] is over: mark it ended and free the running key if it holds it.
-- KEYS: the running scan, the page asked.
local asked = redis.call('GET', KEYS[2])
if asked and string.match(asked, '^(.-):') == ARGV[1] then redis.call('SET', KEYS[2], ARGV[1] .. ':end') end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
