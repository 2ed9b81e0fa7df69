-- KEYS 3 and 4: the governor's pending and in-flight hashes. ARGV: the oldest touch kept (ms), now
-- (ms). First touches every ticket a request the governor holds carries (a peek waiting for tokens
-- longer than the timeout is alive, not lost), then drops older tickets (and any without a touch);
-- returns {dropped: [id, asins, touched, ...], open: [asins, ...]}. KEYS 5: the peek window's count,
-- set to the open tickets.
for k = 3, 4 do
  for _, raw in ipairs(redis.call('HVALS', KEYS[k])) do
    local ok, entry = pcall(cjson.decode, raw)
    local ticket = ok and type(entry) == 'table' and type(entry.payload) == 'table' and entry.payload.ticket
    if type(ticket) == 'string' and redis.call('HEXISTS', KEYS[1], ticket) == 1 then
      redis.call('ZADD', KEYS[2], ARGV[2], ticket)
    end
  end
end
local dropped = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'WITHSCORES')) do
  table.insert(dropped, id)
end
local out = {}
for i = 1, #dropped, 2 do
  local id = dropped[i]
  table.insert(out, id)
  table.insert(out, redis.call('HGET', KEYS[1], id) or '[]')
  table.insert(out, dropped[i + 1])
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local open = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if redis.call('ZSCORE', KEYS[2], all[i]) then
    table.insert(open, all[i + 1])
  else
    table.insert(out, all[i]) table.insert(out, all[i + 1]) table.insert(out, '-1')
    redis.call('HDEL', KEYS[1], all[i])
  end
end
redis.call('SET', KEYS[5], #open)   -- the peek window counts the open tickets, read in this same step
return {out, open}
