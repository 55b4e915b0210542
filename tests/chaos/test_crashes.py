"""Chaos: processes die (SIGKILL) or are told to stop (SIGTERM) in the middle of a burst."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.conftest import duplicates, report, send_burst, setup_email, wait_delivered
from tests.support.servers import free_port
from tests.support.system import running_system

pytestmark = pytest.mark.chaos

BURST = 2000


async def test_sigkill_of_an_email_consumer_mid_burst_loses_and_duplicates_nothing(
    vhost_pool, tmp_path
):
    async with running_system(vhost_pool, tmp_path, env={"CONSUMER_PREFETCH": "20"}) as system:
        replica = system.stack.start("email_service", port=free_port())
        await asyncio.to_thread(system.stack.wait_ready, replica)
        user_id, code = await setup_email(system)
        sending = asyncio.create_task(
            send_burst(system, user_id=user_id, template_code=code, count=BURST, concurrency=50)
        )
        while len(system.sink.handler.mails) < BURST // 4:
            await asyncio.sleep(0.02)
        victim = system.stack.find("email_service")[0]
        system.stack.kill(victim)
        killed_at = time.monotonic()
        delivered_at_kill = len(system.sink.handler.mails)
        burst = await sending
        assert len(burst.accepted) == BURST, (burst.refused, burst.errors)
        done = await wait_delivered(system, burst.accepted, timeout=180)
        dups = duplicates(system)
        report(
            "sigkill_email_consumer_mid_burst",
            accepted=len(burst.accepted),
            delivered_unique=len(system.sink.handler.counts()),
            duplicates=dups,
            delivered_before_kill=delivered_at_kill,
            seconds_from_kill_to_all_delivered=round(done - killed_at, 2),
        )
        assert dups == 0
        # lists come from the durable log, which trails the statuses by about HISTORY_LINGER_MS
        total = 0
        for _ in range(100):
            delivered = await system.http.get(
                f"{system.url('gateway')}/api/v1/notifications/",
                params={"status": "delivered", "limit": 1},
                headers=await system.admin(),
            )
            total = delivered.json()["meta"]["total"]
            if total == BURST:
                break
            await asyncio.sleep(0.1)
        assert total == BURST


async def test_sigterm_drains_in_flight_messages_and_exits_gracefully(vhost_pool, tmp_path):
    async with running_system(vhost_pool, tmp_path, env={"CONSUMER_PREFETCH": "20"}) as system:
        replica = system.stack.start("email_service", port=free_port())
        await asyncio.to_thread(system.stack.wait_ready, replica)
        user_id, code = await setup_email(system)
        sending = asyncio.create_task(
            send_burst(system, user_id=user_id, template_code=code, count=600, concurrency=30)
        )
        while len(system.sink.handler.mails) < 100:
            await asyncio.sleep(0.02)
        leaving = system.stack.find("email_service")[0]
        started = time.monotonic()
        graceful = await asyncio.to_thread(system.stack.stop, leaving, 30)
        stop_seconds = time.monotonic() - started
        burst = await sending
        await wait_delivered(system, burst.accepted, timeout=120)
        logs = system.logs("email_service")
        report(
            "sigterm_email_consumer_mid_burst",
            accepted=len(burst.accepted),
            duplicates=duplicates(system),
            seconds_to_stop=round(stop_seconds, 2),
            graceful=graceful,
        )
        assert graceful
        assert "consumer.stopped" in logs
        assert duplicates(system) == 0
        assert len(burst.accepted) == 600


async def test_sigkill_of_the_gateway_loses_no_accepted_notification(vhost_pool, tmp_path):
    async with running_system(vhost_pool, tmp_path) as system:
        user_id, code = await setup_email(system)
        sending = asyncio.create_task(
            send_burst(system, user_id=user_id, template_code=code, count=600, concurrency=30)
        )
        while len(system.sink.handler.mails) < 100:
            await asyncio.sleep(0.02)
        [gateway] = system.stack.find("gateway")
        system.stack.kill(gateway)
        burst = await sending
        restarted = system.stack.start("gateway")
        await asyncio.to_thread(system.stack.wait_ready, restarted)
        await wait_delivered(system, burst.accepted, timeout=120)
        report(
            "sigkill_gateway_mid_burst",
            accepted=len(burst.accepted),
            refused_or_cut=burst.errors + sum(burst.refused.values()),
            duplicates=duplicates(system),
        )
        assert burst.errors > 0  # the kill really cut requests off
        assert duplicates(system) == 0
