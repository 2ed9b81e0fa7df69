-- The governor's one write per batch, fenced by its lease (actors/ledger.py, Ledger.commit).
-- KEYS: lease, core, pending, inflight, done, snapshot, grant log, outbox, version.
-- ARGV: holder, ops (JSON), lease ms, snapshot document ('' for none), grant log length kept,
--       the state's version this writer loaded or last wrote ('' to skip the check),
--       then pairs (Dramatiq message id, encoded message) for the outbox.
-- Returns 1 when written, 0 (nothing written) when another governor holds the lease or has
-- written since this one loaded (a writer paused past its lease while a successor came and went).
local holder = redis.call('GET', KEYS[1])
if holder ~= false and holder ~= ARGV[1] then return 0 end
local version = tonumber(redis.call('GET', KEYS[9]) or '0')
if ARGV[6] ~= '' and version ~= tonumber(ARGV[6]) then return 0 end
redis.call('SET', KEYS[9], version + 1)
local ops = cjson.decode(ARGV[2])
if ops.core then redis.call('SET', KEYS[2], ops.core) end
for _, kv in ipairs(ops.pending_add) do redis.call('HSET', KEYS[3], kv[1], kv[2]) end
for _, k in ipairs(ops.pending_del) do redis.call('HDEL', KEYS[3], k) end
for _, kv in ipairs(ops.inflight_add) do
  redis.call('HSET', KEYS[4], kv[1], kv[2])
  redis.call('RPUSH', KEYS[7], kv[1])
end
if #ops.inflight_add > 0 then redis.call('LTRIM', KEYS[7], -tonumber(ARGV[5]), -1) end
for _, k in ipairs(ops.inflight_del) do redis.call('HDEL', KEYS[4], k) end
for _, kv in ipairs(ops.done_add) do redis.call('ZADD', KEYS[5], kv[2], kv[1]) end
if ops.done_before then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ops.done_before) end
if ops.done_keep then redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(ops.done_keep + 1)) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[6], ARGV[4]) end
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[8], ARGV[i], ARGV[i + 1]) end
return 1
