-- Create notifications as `pending`, any number at once (a batch from the gateway).
-- KEYS: the history stream, then per notification its hash and its timeline.
-- ARGV: ttl, stream max length, then per notification: event json, the hash as a json object of
-- strings (which also goes to the history stream as it is).
-- Returns per notification 1 (created) or 0 (it existed already: left as it is).
local ttl = tonumber(ARGV[1])
local out = {}
for n = 1, (#KEYS - 1) / 2 do
  local hash, timeline = KEYS[2 * n], KEYS[2 * n + 1]
  local event, snapshot = ARGV[2 * n + 1], ARGV[2 * n + 2]
  if redis.call('EXISTS', hash) == 1 then
    out[n] = 0
  else
    local fields = {}
    for name, value in pairs(cjson.decode(snapshot)) do
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
    redis.call('HSET', hash, unpack(fields))
    redis.call('EXPIRE', hash, ttl)
    redis.call('RPUSH', timeline, event)
    redis.call('EXPIRE', timeline, ttl)
    -- the outbox: the notification as it now is, and the event (see gateway/history.py)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 's', snapshot, 'e', event)
    out[n] = 1
  end
end
return out
