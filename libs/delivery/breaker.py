"""A circuit breaker per provider, its state in Redis, shared by every replica.

States (seed 002): ``closed`` lets calls through and counts failures; ``failure_threshold``
failures within ``window`` open it. ``open`` rejects calls for ``open_seconds``. Then the first
caller gets the single ``half_open`` probe; ``half_open_successes`` successful probes close it, a
failed probe opens it again. A probe holder that vanishes (crash) frees the probe after a lease.

Why not aiobreaker or purgatory (docs/decisions.md): aiobreaker compares ``utcnow()`` with
``now()`` when it says when it reopens (hours wrong, or a TypeError, outside UTC), both let every
concurrent call through while half-open, and neither shares state atomically between replicas.
Here every transition is one Lua script using the Redis server's clock, so time zones and client
clock skew do not matter, and ten replicas see one breaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import structlog
from redis.asyncio import Redis

from libs.metrics import BREAKER_STATE

log = structlog.get_logger(__name__)

# KEYS[1] breaker hash. ARGV: open_ms, probe_lease_ms. Returns {verdict, state, wait_ms, failures}.
_ALLOW = """
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
"""

# KEYS[1] breaker hash. ARGV: outcome ('success'|'failure'), threshold, window_ms,
# half_open_successes. Returns {new state, changed (0|1)}.
_RECORD = """
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
"""


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5
    window_seconds: float = 60.0
    open_seconds: float = 30.0
    half_open_successes: int = 2
    probe_lease_seconds: float = 30.0


@dataclass(frozen=True)
class Permit:
    """The answer to "may I call the provider now?"."""

    allowed: bool
    state: BreakerState
    retry_after_ms: int = 0
    probe: bool = False
    failures: int = 0


class CircuitBreaker:
    def __init__(self, redis: Redis, key: str, name: str, config: BreakerConfig) -> None:
        self.name = name
        self._key = key
        self._config = config
        self._allow = redis.register_script(_ALLOW)
        self._record = redis.register_script(_RECORD)
        self._redis = redis

    async def allow(self) -> Permit:
        raw = await self._allow(
            keys=[self._key],
            args=[
                int(self._config.open_seconds * 1000),
                int(self._config.probe_lease_seconds * 1000),
            ],
        )
        verdict, state, wait, failures = (x.decode() if isinstance(x, bytes) else x for x in raw)
        return Permit(
            allowed=verdict != "reject",
            state=BreakerState(state),
            retry_after_ms=int(wait),
            probe=verdict == "probe",
            failures=int(failures),
        )

    async def record(self, permit: Permit, *, success: bool) -> BreakerState:
        """Report the outcome of a call made with ``permit``."""
        if success and permit.state is BreakerState.CLOSED and permit.failures == 0:
            return BreakerState.CLOSED  # nothing to reset: skip the round trip
        raw = await self._record(
            keys=[self._key],
            args=[
                "success" if success else "failure",
                self._config.failure_threshold,
                int(self._config.window_seconds * 1000),
                self._config.half_open_successes,
            ],
        )
        state, changed = (x.decode() if isinstance(x, bytes) else x for x in raw)
        new_state = BreakerState(state)
        if int(changed):
            BREAKER_STATE.labels(self.name).set(0 if new_state is BreakerState.CLOSED else 1)
            log.warning("breaker.state_changed", provider=self.name, state=new_state.value)
        return new_state

    async def state(self) -> BreakerState:
        raw = await self._redis.hget(self._key, "state")
        state = BreakerState(raw.decode() if isinstance(raw, bytes) else raw or "closed")
        BREAKER_STATE.labels(self.name).set(0 if state is BreakerState.CLOSED else 1)
        return state
