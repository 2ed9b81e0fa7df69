-- A key held by ARGV[1] is renewed for ARGV[2] ms; 0 if another holds it or it is gone.
-- KEYS: the key (the governor's lease, the `up` marker).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
