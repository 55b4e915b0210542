-- KEYS: hash, timeline, history stream
-- ARGV: new status ('' keeps it), allowed-from (comma list, '' = any), now, ttl, event json,
--       attempt number (0 = unchanged; attempts only grows), stream max length,
--       field/value pairs...
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {'missing', ''} end
local new = ARGV[1]
if new ~= '' and ARGV[2] ~= '' then
  local allowed = false
  for s in string.gmatch(ARGV[2], '[^,]+') do
    if s == current then allowed = true end
  end
  if not allowed then return {'refused', current} end
end
local ttl = tonumber(ARGV[4])
if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
local attempt = tonumber(ARGV[6])
if attempt > (tonumber(redis.call('HGET', KEYS[1], 'attempts')) or 0) then
  redis.call('HSET', KEYS[1], 'attempts', attempt)
end
if new ~= '' and new ~= current then redis.call('HSET', KEYS[1], 'status', new) end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], -200, -1)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
-- the outbox: the notification as it now is, and the event (see gateway/history.py)
local h = redis.call('HGETALL', KEYS[1])
local snapshot = {}
for i = 1, #h, 2 do snapshot[h[i]] = h[i + 1] end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 's', cjson.encode(snapshot), 'e', ARGV[5])
return {'ok', current}
