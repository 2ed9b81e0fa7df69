-- Take a gone attempt's claim over (compare and set). KEYS: the claim, the attempts' beats.
-- ARGV: the claim expected, the claim to put, its TTL (ms), the attempt, now (ms).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
return 1
