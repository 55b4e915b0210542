-- KEYS: records' keys; ARGV[i]: the record KEYS[i] must still hold to be removed (nobody else
-- took the request id over meanwhile). Returns how many were removed.
local removed = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then removed = removed + redis.call('DEL', key) end
end
return removed
