-- Claim a grant if nobody has (actors/grant_claims.py). KEYS: the claim, the attempts' beats.
-- ARGV: the new claim, its TTL (ms), the attempt, now (ms). Returns the claim found, or false.
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return false
