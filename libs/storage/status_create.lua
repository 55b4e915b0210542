-- Create notifications as `pending`, any number at once (a batch from the gateway).
-- KEYS: the history stream, then per notification its hash and its timeline.
-- ARGV: ttl, stream max length, then per notification: event json, field count, field/value pairs.
-- Returns per notification 1 (created) or 0 (it existed already: left as it is).
local ttl = tonumber(ARGV[1])
local out = {}
local a = 3
for n = 1, (#KEYS - 1) / 2 do
  local hash, timeline = KEYS[2 * n], KEYS[2 * n + 1]
  local event, count = ARGV[a], tonumber(ARGV[a + 1])
  if redis.call('EXISTS', hash) == 1 then
    out[n] = 0
  else
    redis.call('HSET', hash, unpack(ARGV, a + 2, a + 1 + count))
    redis.call('EXPIRE', hash, ttl)
    redis.call('RPUSH', timeline, event)
    redis.call('EXPIRE', timeline, ttl)
    -- the outbox: the notification as it now is, and the event (see gateway/history.py)
    local snapshot = {}
    for i = a + 2, a + 1 + count, 2 do snapshot[ARGV[i]] = ARGV[i + 1] end
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 's', cjson.encode(snapshot), 'e', event)
    out[n] = 1
  end
  a = a + 2 + count
end
return out
