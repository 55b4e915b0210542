-- KEYS[1] breaker hash. ARGV: outcome ('success'|'failure'), threshold, window_ms,
-- half_open_successes. Returns {new state, changed (0|1)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 'state', 'failures', 'window_start', 'successes')
local state = s[1] or 'closed'
if ARGV[1] == 'success' then
  if state == 'half_open' then
    local successes = (tonumber(s[4]) or 0) + 1
    if successes >= tonumber(ARGV[4]) then
      redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'window_start', now,
                 'successes', 0, 'probe_until', 0)
      return {'closed', 1}
    end
    redis.call('HSET', KEYS[1], 'successes', successes, 'probe_until', 0)
  end
  return {state, 0}
end
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'successes', 0, 'probe_until', 0)
  return {'open', 1}
end
if state == 'open' then return {state, 0} end
local failures = tonumber(s[2]) or 0
local window_start = tonumber(s[3]) or now
if now - window_start > tonumber(ARGV[3]) then
  failures = 0
  window_start = now
end
failures = failures + 1
if failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'failures', failures,
             'window_start', window_start)
  return {'open', 1}
end
redis.call('HSET', KEYS[1], 'failures', failures, 'window_start', window_start)
return {state, 0}
