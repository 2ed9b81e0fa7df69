-- Put a claim only while the attempt ARGV[1] still holds it. KEYS: the claim.
-- ARGV: the attempt, the claim to put, its TTL (ms).
local current = redis.call('GET', KEYS[1])
if not current or cjson.decode(current)['owner'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
