"""The send claim across a crash, at the two moments that matter (deterministic, not by luck).

A relay that stalls lets the test kill the consumer at a chosen point of the SMTP transaction:
after the relay accepted the message (end-of-data received, 250 not yet sent) it must not be sent
again; before (waiting for the RCPT reply) it must be. Without the ``committing`` mark written at
the end-of-data line, the first case would send the mail twice.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.conftest import report, setup_email
from tests.support.system import running_system

pytestmark = pytest.mark.chaos


async def _send_one(system, user_id, code) -> str:
    response = await system.send(
        notification_type="email", user_id=user_id, template_code=code, variables={"name": "x"}
    )
    assert response.status_code == 202
    return str(response.json()["data"]["notification_id"])


async def _replace_consumer(system) -> None:
    [consumer] = system.stack.find("email_service")
    system.stack.kill(consumer)
    replacement = system.stack.start("email_service")
    await asyncio.to_thread(system.stack.wait_ready, replacement)


async def test_killed_after_the_relay_accepted_is_not_sent_again(vhost_pool, tmp_path):
    async with running_system(vhost_pool, tmp_path, sink_process=True) as system:
        user_id, code = await setup_email(system)
        system.sink.stop()
        system.sink.start("accept", "--delay-data", "30")
        nid = await _send_one(system, user_id, code)
        while nid not in system.sink.counts():  # accepted by the relay; its 250 is still coming
            await asyncio.sleep(0.05)
        await _replace_consumer(system)
        started = time.monotonic()
        record = await system.wait_status(nid, "delivered", timeout=30)
        await asyncio.sleep(2)
        report(
            "kill_after_end_of_data",
            sends=system.sink.counts()[nid],
            seconds_to_settle=round(time.monotonic() - started, 2),
        )
        assert system.sink.counts()[nid] == 1
        assert record["provider"] == "smtp"


async def test_killed_before_the_relay_accepted_is_sent_again(vhost_pool, tmp_path):
    async with running_system(vhost_pool, tmp_path, sink_process=True) as system:
        user_id, code = await setup_email(system)
        system.sink.stop()
        system.sink.start("accept", "--delay-rcpt", "2")
        nid = await _send_one(system, user_id, code)
        await asyncio.sleep(1.0)  # the consumer is waiting for the RCPT reply
        assert nid not in system.sink.counts()
        await _replace_consumer(system)
        await system.wait_status(nid, "delivered", timeout=30)
        report("kill_before_end_of_data", sends=system.sink.counts()[nid])
        assert system.sink.counts()[nid] == 1
