-- KEYS: failures, lock. ARGV: window, max failures, lockout, lockable (1/0).
-- Returns the failure count. An account that is not lockable keeps counting (its slow-down grows).
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if ARGV[4] == '1' and count >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
  redis.call('DEL', KEYS[1])
end
return count
