-- KEYS: hash, timeline, idx:status:<each status...>
-- ARGV: id, new status ('' keeps it), allowed-from (comma list, '' = any), now, ttl, event json,
--       attempt number (0 = unchanged; attempts only grows), field/value pairs...
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {'missing', ''} end
local new = ARGV[2]
if new ~= '' and ARGV[3] ~= '' then
  local allowed = false
  for s in string.gmatch(ARGV[3], '[^,]+') do
    if s == current then allowed = true end
  end
  if not allowed then return {'refused', current} end
end
local ttl = tonumber(ARGV[5])
if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
local attempt = tonumber(ARGV[7])
if attempt > (tonumber(redis.call('HGET', KEYS[1], 'attempts')) or 0) then
  redis.call('HSET', KEYS[1], 'attempts', attempt)
end
if new ~= '' and new ~= current then
  redis.call('HSET', KEYS[1], 'status', new)
  local score = redis.call('HGET', KEYS[1], 'created_ts')
  for i = 3, #KEYS do
    local key = KEYS[i]
    if string.sub(key, -#current - 1) == ':' .. current then redis.call('ZREM', key, ARGV[1]) end
    if string.sub(key, -#new - 1) == ':' .. new then redis.call('ZADD', key, score, ARGV[1]) end
  end
end
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('LTRIM', KEYS[2], -200, -1)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return {'ok', current}
