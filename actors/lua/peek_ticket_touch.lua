-- ARGV: the ticket, now (ms). 1 if it is open (and now touched), else 0.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
