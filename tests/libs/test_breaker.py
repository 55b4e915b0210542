"""The circuit breaker: why not aiobreaker (its defects, shown), and ours under a non-UTC TZ.

ARCHITECTURE.md asks to prove the breaker correct in our use under a non-UTC time zone, or replace
it. The first tests show aiobreaker 1.2.0 getting the reopen time wrong by hours (or raising) and
letting every concurrent half-open call through; the rest show the Redis breaker we use instead.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import aiobreaker
import pytest

from libs.delivery.breaker import BreakerConfig, BreakerState, CircuitBreaker


@pytest.fixture
def time_zone() -> Iterator[Callable[[str], None]]:
    original = os.environ.get("TZ")

    def use(zone: str) -> None:
        os.environ["TZ"] = zone
        time.tzset()

    yield use
    if original is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = original
    time.tzset()


async def _fail() -> None:
    raise ConnectionError("provider down")


async def _open_aiobreaker(
    timeout: float,
) -> tuple[aiobreaker.CircuitBreaker, aiobreaker.CircuitBreakerError]:
    breaker = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=timeout))
    with pytest.raises(aiobreaker.CircuitBreakerError) as opened:
        await breaker.call_async(_fail)
    return breaker, opened.value


async def test_aiobreaker_reopen_time_is_hours_off_west_of_utc(time_zone):
    time_zone("America/Sao_Paulo")  # UTC-3
    _, error = await _open_aiobreaker(timeout=30)
    # it should say "about 30 seconds"; it says about three hours
    assert error.time_remaining > timedelta(hours=2)


async def test_aiobreaker_reopen_time_is_missing_east_of_utc(time_zone):
    time_zone("Asia/Tokyo")  # UTC+9
    _, error = await _open_aiobreaker(timeout=30)
    assert error.reopen_time is None
    with pytest.raises(TypeError):
        _ = error.time_remaining


async def test_aiobreaker_half_open_lets_every_concurrent_call_through():
    breaker, _ = await _open_aiobreaker(timeout=0.2)
    await asyncio.sleep(0.3)
    calls = 0

    async def slow_probe() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)

    await asyncio.gather(
        *(breaker.call_async(slow_probe) for _ in range(10)), return_exceptions=True
    )
    assert calls == 10  # a half-open breaker should have let one through


FAST = BreakerConfig(
    failure_threshold=3,
    window_seconds=10,
    open_seconds=0.5,
    half_open_successes=2,
    probe_lease_seconds=2,
)


@pytest.fixture
def breaker(redis, keys) -> CircuitBreaker:
    return CircuitBreaker(redis, keys.breaker("smtp"), "smtp", FAST)


async def _fail_times(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        permit = await breaker.allow()
        await breaker.record(permit, success=False)


@pytest.mark.parametrize("zone", ["America/Sao_Paulo", "Asia/Tokyo", "UTC"])
async def test_breaker_opens_and_reports_the_right_wait_in_any_time_zone(breaker, time_zone, zone):
    time_zone(zone)
    await _fail_times(breaker, 2)
    assert (await breaker.allow()).allowed
    await _fail_times(breaker, 1)
    permit = await breaker.allow()
    assert not permit.allowed
    assert permit.state is BreakerState.OPEN
    assert 0 < permit.retry_after_ms <= 500


async def test_half_open_admits_exactly_one_probe(breaker):
    await _fail_times(breaker, 3)
    await asyncio.sleep(0.6)
    permits = await asyncio.gather(*(breaker.allow() for _ in range(10)))
    assert sum(p.allowed for p in permits) == 1
    assert next(p for p in permits if p.allowed).probe


async def test_successful_probes_close_it_and_a_failed_probe_reopens_it(breaker):
    await _fail_times(breaker, 3)
    await asyncio.sleep(0.6)
    probe = await breaker.allow()
    assert await breaker.record(probe, success=False) is BreakerState.OPEN
    assert not (await breaker.allow()).allowed
    await asyncio.sleep(0.6)
    for _ in range(2):
        probe = await breaker.allow()
        assert probe.allowed
        assert probe.probe
        await breaker.record(probe, success=True)
    assert await breaker.state() is BreakerState.CLOSED
    assert (await breaker.allow()).allowed


async def test_state_is_shared_by_replicas(redis, keys):
    key = keys.breaker("fcm")
    replica_a = CircuitBreaker(redis, key, "fcm", FAST)
    replica_b = CircuitBreaker(redis, key, "fcm", FAST)
    await _fail_times(replica_a, 2)
    await _fail_times(replica_b, 1)
    assert not (await replica_a.allow()).allowed
    assert not (await replica_b.allow()).allowed


async def test_a_vanished_probe_frees_the_half_open_slot_after_its_lease(redis, keys):
    config = BreakerConfig(failure_threshold=1, open_seconds=0.2, probe_lease_seconds=0.3)
    breaker = CircuitBreaker(redis, keys.breaker("x"), "x", config)
    await _fail_times(breaker, 1)
    await asyncio.sleep(0.25)
    assert (await breaker.allow()).probe  # this caller "crashes" and never reports
    assert not (await breaker.allow()).allowed
    await asyncio.sleep(0.35)
    assert (await breaker.allow()).probe


async def test_failures_outside_the_window_do_not_add_up(redis, keys):
    config = BreakerConfig(failure_threshold=2, window_seconds=0.2, open_seconds=5)
    breaker = CircuitBreaker(redis, keys.breaker("w"), "w", config)
    await _fail_times(breaker, 1)
    await asyncio.sleep(0.3)
    await _fail_times(breaker, 1)
    assert (await breaker.allow()).allowed


async def test_the_gauge_reads_the_shared_state_not_this_replicas_last_transition(redis, keys):
    """Replica B never saw a transition; its gauge still shows what Redis holds, and an open
    breaker whose open time is over reads half-open even when nobody has called since."""
    from prometheus_client import REGISTRY

    key = keys.breaker("gauge")
    replica_a = CircuitBreaker(redis, key, "gauge", FAST)
    replica_b = CircuitBreaker(redis, key, "gauge", FAST)

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("circuit_breaker_state", {"provider": "gauge"})

    assert await replica_b.state() is BreakerState.CLOSED
    assert gauge() == 0
    await _fail_times(replica_a, 3)
    assert await replica_b.state() is BreakerState.OPEN
    assert gauge() == 2
    await asyncio.sleep(0.6)
    assert await replica_b.state() is BreakerState.HALF_OPEN
    assert gauge() == 1
