-- KEYS[1] the version key. ARGV: entry key stem, entry key suffix, keep seconds (of the version),
-- and keep-on-use seconds (0: leave the entry's lifetime alone).
-- Returns {version, entry or false}. A missing version key (never bumped, expired or evicted)
-- gets a fresh version taken from Redis's clock (microseconds), one no entry was ever written
-- under, so an entry cached under an older number can never be read again. An entry read while
-- keep-on-use is given lives that long from now (renewed once half of it has passed): an entry
-- stored for a short trial stays once it is used again.
local version = redis.call('GET', KEYS[1])
if not version then
  local t = redis.call('TIME')
  version = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  if not redis.call('SET', KEYS[1], version, 'NX', 'EX', ARGV[3]) then
    version = redis.call('GET', KEYS[1])
  end
end
local key = ARGV[1] .. version .. ARGV[2]
local entry = redis.call('GET', key)
local keep = tonumber(ARGV[4])
if entry and keep > 0 and redis.call('TTL', key) < keep / 2 then
  redis.call('EXPIRE', key, keep)
end
return {version, entry}
