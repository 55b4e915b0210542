local current = redis.call('GET', KEYS[1])
if current == ARGV[1] or current == ARGV[2] then return redis.call('DEL', KEYS[1]) end
return 0
