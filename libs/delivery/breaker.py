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

from libs.metrics import BREAKER_STATE, BREAKER_STATES
from libs.storage.redis import lua_script

log = structlog.get_logger(__name__)

_ALLOW = lua_script(__file__, "breaker_allow.lua")

_RECORD = lua_script(__file__, "breaker_record.lua")


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
            log.warning("breaker.state_changed", provider=self.name, state=new_state.value)
        return new_state

    async def state(self) -> BreakerState:
        """The shared state as Redis holds it now, on Redis's clock; also sets the gauge.

        An ``open`` breaker whose open time is over reads ``half_open``: the next call probes
        (Redis keeps ``open`` until someone asks, which may be never while nothing is sent).
        """
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self._key, "state", "opened_at")
        pipe.time()
        (raw_state, opened_at), (seconds, micros) = await pipe.execute()
        state = BreakerState(_text(raw_state) or "closed")
        if state is BreakerState.OPEN and opened_at is not None:
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            if now_ms >= int(opened_at) + int(self._config.open_seconds * 1000):
                state = BreakerState.HALF_OPEN
        BREAKER_STATE.labels(self.name).set(BREAKER_STATES[state.value])
        return state


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
