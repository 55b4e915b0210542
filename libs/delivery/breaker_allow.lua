-- KEYS[1] breaker hash. ARGV: open_ms, probe_lease_ms. Returns {verdict, state, wait_ms, failures}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probe_until', 'failures')
local state = s[1] or 'closed'
local failures = tonumber(s[4]) or 0
if state == 'closed' then return {'allow', state, 0, failures} end
if state == 'open' then
  local reopen = tonumber(s[2]) + tonumber(ARGV[1])
  if now < reopen then return {'reject', state, reopen - now, failures} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[2]),
             'successes', 0)
  return {'probe', 'half_open', 0, failures}
end
local probe_until = tonumber(s[3]) or 0
-- a probe is out: its answer comes within one send, so look again soon (not after the lease)
if now < probe_until then return {'reject', state, math.min(probe_until - now, 1000), failures} end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
return {'probe', state, 0, failures}
