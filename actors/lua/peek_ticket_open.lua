-- KEYS: tickets, touched. ARGV: the ticket, its ASINs (JSON), now (ms).
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
