-- Keep the running-scan key for ARGV[1] (or take it back once expired) unless another scan holds
-- it, a newer scan was asked for since, or this one is over. KEYS: the running scan, the page asked.
-- ARGV: the scan, the running key's TTL (ms).
local running = redis.call('GET', KEYS[1])
if running and running ~= ARGV[1] then return 0 end
local asked = redis.call('GET', KEYS[2])
if asked then
  local scan, page = string.match(asked, '^(.-):(.*)$')
  if scan ~= ARGV[1] or page == 'end' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
