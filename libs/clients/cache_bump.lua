-- KEYS[1] the version key. ARGV: keep seconds. Returns the new version.
-- The new version is past both the current one and Redis's clock (microseconds): numbers only
-- grow, even across an expired or evicted version key, so none is ever reused while entries
-- written under it may still be cached.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local version = math.max(current + 1, now)
redis.call('SET', KEYS[1], string.format('%.0f', version), 'EX', ARGV[1])
return string.format('%.0f', version)
