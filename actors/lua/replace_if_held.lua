-- A key holding exactly ARGV[1] gets the value ARGV[2] for ARGV[3] ms; 0 otherwise. KEYS: the key.
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0
