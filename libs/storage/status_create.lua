-- KEYS: hash, timeline, history stream
-- ARGV: ttl, event json, stream max length, field/value pairs...
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ttl = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ttl)
-- the outbox: the notification as it now is, and the event (see gateway/history.py)
local h = redis.call('HGETALL', KEYS[1])
local snapshot = {}
for i = 1, #h, 2 do snapshot[h[i]] = h[i + 1] end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 's', cjson.encode(snapshot), 'e', ARGV[2])
return 1
