-- The run of the grant asked for at page ARGV[2] of scan ARGV[1] asks for page ARGV[3]; 0 if it may
-- not. An absent marker (a Redis that lost its data) lets the first run that asks take the lead.
-- KEYS: the running scan, the page asked.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local asked = redis.call('GET', KEYS[2])
if asked and asked ~= ARGV[1] .. ':' .. ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[3])
return 1
