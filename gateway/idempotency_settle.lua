-- KEYS: records' keys. ARGV[1]: ttl in seconds; ARGV[1 + i]: the record to store at KEYS[i].
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1]) end
return #KEYS
