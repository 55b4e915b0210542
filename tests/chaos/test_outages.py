"""Chaos: the SMTP relay goes away or refuses, poison arrives, the broker connection is cut."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import pytest

from tests.chaos.conftest import (
    duplicates,
    metric_total,
    report,
    send_burst,
    setup_email,
    wait_delivered,
)
from tests.support.amqp import publish_raw
from tests.support.isolation import AMQP_BASE
from tests.support.proxy import TcpProxy
from tests.support.system import running_system

pytestmark = pytest.mark.chaos

FAST_BREAKER = {"BREAKER_OPEN_SECONDS": "2", "BREAKER_FAILURE_THRESHOLD": "5"}


async def test_smtp_outage_opens_the_breaker_and_everything_is_delivered_after(
    vhost_pool, tmp_path
):
    async with running_system(vhost_pool, tmp_path, env=FAST_BREAKER, sink_process=True) as system:
        user_id, code = await setup_email(system)
        sending = asyncio.create_task(
            send_burst(system, user_id=user_id, template_code=code, count=300, rate=20)
        )
        await asyncio.sleep(2)
        system.sink.stop()
        down_at = time.monotonic()
        saw_open = False
        while time.monotonic() - down_at < 10:
            ready = await system.http.get(f"{system.url('email_service')}/ready")
            breakers = ready.json()["data"]["checks"]["providers"].get("breakers", {})
            saw_open = saw_open or breakers.get("smtp") == "open"
            await asyncio.sleep(0.5)
        system.sink.start()
        back_at = time.monotonic()
        burst = await sending
        done = await wait_delivered(system, burst.accepted, timeout=120)
        failures = await metric_total(
            system,
            "email_service",
            r'provider_sends_total\{provider="smtp",result="transient_error"\}',
        )
        failed_queue = await system.http.get(
            f"{system.url('dlq_service')}/api/v1/failed/", headers=await system.admin()
        )
        report(
            "smtp_down_10s",
            accepted=len(burst.accepted),
            duplicates=duplicates(system),
            provider_attempts_while_down=int(failures),
            seconds_from_return_to_all_delivered=round(done - back_at, 2),
            breaker_seen_open=saw_open,
        )
        assert saw_open
        assert duplicates(system) == 0
        assert failed_queue.json()["meta"]["total"] == 0
        # ~200 notifications arrived during the outage; without the breaker each would have
        # tried the relay 4 times (800 attempts). The breaker lets a probe through every 2 s.
        assert failures < 120


@pytest.mark.parametrize(
    ("mode", "reason", "attempts"),
    [("tempfail", "retries_exhausted", 4), ("reject", "permanent_error", 1)],
)
async def test_a_refusing_relay_sends_every_message_to_the_dlq_with_its_reason(
    vhost_pool, tmp_path, mode, reason, attempts
):
    async with running_system(vhost_pool, tmp_path, sink_process=True) as system:
        user_id, code = await setup_email(system)
        system.sink.stop()
        system.sink.start(mode)
        burst = await send_burst(system, user_id=user_id, template_code=code, count=10)
        admin = await system.admin()
        records = [await system.wait_status(nid, "failed", timeout=30) for nid in burst.accepted]
        for _ in range(100):
            listed = await system.http.get(
                f"{system.url('dlq_service')}/api/v1/failed/", params={"limit": 50}, headers=admin
            )
            assert listed.json()["meta"] is not None, listed.text
            if listed.json()["meta"]["total"] == 10:
                break
            await asyncio.sleep(0.1)
        entries = listed.json()["data"]
        report(f"relay_{mode}", failed=len(entries), attempts=[r["attempts"] for r in records][:3])
        assert {e["notification_id"] for e in entries} == set(burst.accepted)
        assert {e["reason"] for e in entries} == {reason}
        assert all(r["attempts"] == attempts for r in records)
        assert all(("451" if mode == "tempfail" else "550") in e["error"] for e in entries)
        assert len(system.sink.snapshot()) == 0

        # the relay is fixed: republishing from the DLQ delivers each message exactly once
        system.sink.stop()
        system.sink.start("accept")
        republished = await system.http.post(
            f"{system.url('dlq_service')}/api/v1/failed/republish",
            json={"filter": {"reason": reason}, "limit": 100},
            headers=admin,
        )
        assert republished.status_code == 200, republished.text
        assert republished.json()["data"]["republished"] == 10
        await wait_delivered(system, burst.accepted, timeout=60)
        again = await system.http.post(
            f"{system.url('dlq_service')}/api/v1/failed/republish",
            json={"filter": {"reason": reason}, "limit": 100},
            headers=admin,
        )
        assert again.json()["data"]["republished"] == 0  # nothing pending is left to replay
        await asyncio.sleep(1)
        assert duplicates(system) == 0
        for nid in burst.accepted:
            record = await system.status(nid)
            assert record["status"] == "delivered"
            assert "republished" in [e["event"] for e in record["timeline"]]


async def test_poison_goes_to_the_dlq_at_once_and_does_not_block_the_queue(vhost_pool, tmp_path):
    async with running_system(vhost_pool, tmp_path) as system:
        user_id, code = await setup_email(system)
        connection = await aio_pika.connect_robust(system.env["RABBITMQ_URL"])
        started = time.monotonic()
        await publish_raw(
            connection, "notifications.direct", "email", b"\x00\xffnot json", message_id="poison-1"
        )
        await publish_raw(
            connection,
            "notifications.direct",
            "email",
            b'{"notification_id": "' + str(uuid.uuid4()).encode() + b'"}',
            message_id="poison-2",
        )
        await connection.close()
        healthy = await system.send(
            notification_type="email", user_id=user_id, template_code=code, variables={"name": "ok"}
        )
        await system.wait_status(healthy.json()["data"]["notification_id"], "delivered")
        admin = await system.admin()
        for _ in range(100):
            listed = await system.http.get(
                f"{system.url('dlq_service')}/api/v1/failed/",
                params={"reason": "invalid_message"},
                headers=admin,
            )
            if listed.json()["meta"]["total"] == 2:
                break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        report("poison", in_dlq=listed.json()["meta"]["total"], seconds=round(elapsed, 2))
        assert listed.json()["meta"]["total"] == 2
        assert elapsed < 5  # straight there: no retry ladder
        [one] = [e for e in listed.json()["data"] if e["message_id"] == "poison-1"]
        detail = await system.http.get(
            f"{system.url('dlq_service')}/api/v1/failed/{one['id']}", headers=admin
        )
        assert detail.json()["data"]["attempts"] == 0


async def test_broker_connection_cut_gives_503s_then_recovers_without_restarts(
    vhost_pool, tmp_path
):
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    try:
        vhost_url = None
        async with running_system(
            vhost_pool,
            tmp_path,
            env={"PUBLISH_CONFIRM_TIMEOUT_SECONDS": "2"},
            start=False,
        ) as system:
            vhost = system.env["RABBITMQ_URL"].rsplit("/", 1)[1]
            vhost_url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
            system.stack.env["RABBITMQ_URL"] = vhost_url
            await asyncio.to_thread(system.stack.start_all, 90)
            pids = {p.name: p.popen.pid for p in system.stack.processes}
            user_id, code = await setup_email(system)
            sending = asyncio.create_task(
                send_burst(
                    system, user_id=user_id, template_code=code, count=400, rate=25, concurrency=20
                )
            )
            await asyncio.sleep(3)
            await proxy.cut()
            cut_at = time.monotonic()
            await asyncio.sleep(5)
            await proxy.restore()
            restored_at = time.monotonic()
            restored_wall = time.time()
            consuming_at = None
            while consuming_at is None and time.monotonic() - restored_at < 60:
                ready = [
                    (await system.http.get(f"{system.url(name)}/ready")).status_code
                    for name in ("gateway", "email_service", "dlq_service")
                ]
                if set(ready) == {200}:
                    consuming_at = time.monotonic()
                await asyncio.sleep(0.2)
            burst = await sending
            last_sent = time.monotonic()
            done = await wait_delivered(system, burst.accepted, timeout=120)
            after = [
                m.received_at
                for m in system.sink.handler.snapshot()
                if m.received_at > restored_wall
            ]
            report(
                "broker_cut_5s",
                accepted=len(burst.accepted),
                refused_503=burst.refused.get(503, 0),
                other_refusals={k: v for k, v in burst.refused.items() if k != 503},
                duplicates=duplicates(system),
                seconds_cut=round(restored_at - cut_at, 2),
                seconds_to_ready_after_restore=round((consuming_at or 0) - restored_at, 2),
                seconds_to_first_delivery_after_restore=round(min(after) - restored_wall, 2),
                seconds_from_last_send_to_all_delivered=round(max(0.0, done - last_sent), 2),
            )
            assert burst.refused.get(503, 0) > 0  # the gateway said so while it could not publish
            assert set(burst.refused) <= {503}
            assert consuming_at is not None
            assert duplicates(system) == 0
            assert {p.name: p.popen.pid for p in system.stack.processes} == pids
            assert all(p.alive for p in system.stack.processes)
    finally:
        await proxy.close()
    assert AMQP_BASE in system.env["RABBITMQ_URL"]
