-- KEYS[1] the version key. ARGV: entry key stem, entry key suffix, keep seconds.
-- Returns {version, entry or false}. A missing version key (never bumped, expired or evicted)
-- gets a fresh version taken from Redis's clock (microseconds), one no entry was ever written
-- under, so an entry cached under an older number can never be read again.
local version = redis.call('GET', KEYS[1])
if not version then
  local t = redis.call('TIME')
  version = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  if not redis.call('SET', KEYS[1], version, 'NX', 'EX', ARGV[3]) then
    version = redis.call('GET', KEYS[1])
  end
end
return {version, redis.call('GET', ARGV[1] .. version .. ARGV[2])}
