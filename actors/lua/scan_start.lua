-- Begin a feed scan unless one runs (actors/scan_frontier.py). KEYS: the running scan, the page asked.
-- ARGV: the scan, its first page, the running key's TTL (ms). Returns 1 if it began.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2]) return 1
end
return 0
