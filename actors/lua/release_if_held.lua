-- A key held by ARGV[1] is deleted; 0 if another holds it. KEYS: the key.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
