-- Claim request ids, any number at once. KEYS: the records' keys. ARGV[1]: ttl in seconds, then
-- ARGV[1 + i]: the pending record for KEYS[i]. For each key: the record already there (which
-- this call leaves alone), or false after storing the pending record (SET NX, key by key, so a
-- key given twice is claimed by its first occurrence and the second sees that claim).
local out = {}
for i, key in ipairs(KEYS) do
  local existing = redis.call('GET', key)
  if existing then
    out[i] = existing
  else
    redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
    out[i] = false
  end
end
return out
