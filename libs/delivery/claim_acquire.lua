-- ARGV: new 'sending' value, lease ms, alive-key prefix, sent ttl seconds
-- ':takeover' is appended when a dead holder's claim is taken over (counted by the caller).
local current = redis.call('GET', KEYS[1])
local takeover = ''
if current then
  if string.sub(current, 1, 5) == 'sent:' then return current end
  local holder, provider = string.match(current, '^committing:([^:]+):([^:]+):')
  if holder then
    if redis.call('EXISTS', ARGV[3] .. holder) == 1 then return 'busy:' .. current end
    local sent = 'sent:' .. provider .. ':assumed'
    redis.call('SET', KEYS[1], sent, 'EX', ARGV[4])
    return sent .. ':takeover'
  end
  holder = string.match(current, '^sending:([^:]+):')
  if holder and redis.call('EXISTS', ARGV[3] .. holder) == 1 then return 'busy:' .. current end
  takeover = ':takeover'
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'acquired' .. takeover
