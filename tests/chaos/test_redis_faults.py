"""Chaos: Redis goes away for 15 s in the middle of a 1,000-notification burst.

A Redis fault is a wait, never an attempt: nothing lands in failed.queue, every notification is
delivered exactly once after Redis returns, and every status ends ``delivered``. While the gateway
cannot record, it answers 503 (never a 202 without a record, never a 500); the client retries the
refused ones with the same request_id.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from tests.chaos.conftest import duplicates, metric_total, report, setup_email, wait_delivered
from tests.support.proxy import TcpProxy
from tests.support.system import System, running_system

pytestmark = pytest.mark.chaos

COUNT = 1000
RATE = 250.0  # requests per second asked for: the burst would last 4 s
CUT_AFTER = 2.0
CUT_FOR = 15.0


async def _send_until_accepted(
    system: System,
    headers: dict[str, str],
    body: dict[str, object],
    answers: dict[int, int],
    gate: asyncio.Semaphore,
) -> str:
    """POST until 202, with the same request_id (what a client does with a 503)."""
    for _ in range(600):
        try:
            async with gate:
                response = await system.http.post(
                    f"{system.url('gateway')}/api/v1/notifications/", json=body, headers=headers
                )
        except httpx.HTTPError as exc:  # a timeout or a dropped connection: counted as 0
            answers[0] = answers.get(0, 0) + 1
            print(f"{body['request_id']}: {exc!r}", flush=True)
            await asyncio.sleep(0.5)
            continue
        answers[response.status_code] = answers.get(response.status_code, 0) + 1
        if response.status_code == 202:
            return str(response.json()["data"]["notification_id"])
        await asyncio.sleep(0.5)
    raise AssertionError(f"{body['request_id']} never accepted")


async def test_a_redis_outage_mid_burst_delays_but_never_fails_or_duplicates(vhost_pool, tmp_path):
    proxy = await TcpProxy("127.0.0.1", 6379).start()
    try:
        async with running_system(vhost_pool, tmp_path, start=False) as system:
            system.stack.env["REDIS_URL"] = f"redis://127.0.0.1:{proxy.port}/0"
            await asyncio.to_thread(system.stack.start_all, 90)
            user_id, code = await setup_email(system)
            headers = await system.admin()
            answers: dict[int, int] = {}
            gate = asyncio.Semaphore(40)  # a client with 40 requests in flight at most
            started = time.monotonic()

            async def one(i: int) -> str:
                await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
                body: dict[str, object] = {
                    "notification_type": "email",
                    "user_id": user_id,
                    "template_code": code,
                    "variables": {"name": f"n{i}"},
                    "request_id": f"redis-cut-{i}-{uuid.uuid4().hex[:8]}",
                }
                return await _send_until_accepted(system, headers, body, answers, gate)

            sending = asyncio.gather(*(one(i) for i in range(COUNT)))

            async def progress() -> None:
                while True:
                    await asyncio.sleep(5)
                    print(
                        f"t={time.monotonic() - started:.0f}s answers={answers} "
                        f"delivered={len(system.sink.handler.mails)}",
                        flush=True,
                    )

            ticker = asyncio.create_task(progress())
            # cut once delivery is under way (at least CUT_AFTER s and 100 mails in)
            await asyncio.sleep(CUT_AFTER)
            while len(system.sink.handler.mails) < 100 and time.monotonic() - started < 60:
                await asyncio.sleep(0.05)
            delivered_before_cut = len(system.sink.handler.mails)
            await proxy.cut()
            await asyncio.sleep(CUT_FOR)
            await proxy.restore()
            restored_at = time.monotonic()
            accepted = await sending
            done = await wait_delivered(system, list(accepted), timeout=240)
            ticker.cancel()

            failed = await system.http.get(
                f"{system.url('dlq_service')}/api/v1/failed/", headers=await system.admin()
            )
            statuses = [await system.status(nid) for nid in accepted[:: COUNT // 100]]
            # during the cut Redis cannot take a note of it: the consumer's own count shows it
            waited = await metric_total(
                system,
                "email_service",
                r'messages_consumed_total\{outcome="retry",queue="email.queue"\}',
            )
            report(
                "redis_cut_15s",
                accepted=len(set(accepted)),
                answers={str(k): v for k, v in sorted(answers.items())},
                delivered_before_cut=delivered_before_cut,
                duplicates=duplicates(system),
                seconds_from_restore_to_all_delivered=round(done - restored_at, 2),
                parked_without_an_attempt=waited,
            )
            assert len(set(accepted)) == COUNT
            # never a 500, never a dropped connection or a request held past the client's timeout;
            # 409 request_in_progress: a retry whose earlier try the cut interrupted holding its
            # id (its claim lapses after IDEMPOTENCY_PENDING_SECONDS), told to come back
            assert set(answers) <= {202, 409, 503}
            assert answers.get(503, 0) > 0  # the gateway said so while it could not record
            assert duplicates(system) == 0
            assert failed.json()["meta"]["total"] == 0
            assert {record["status"] for record in statuses} == {"delivered"}
            assert all(record["attempts"] == 1 for record in statuses)  # waits spent none
            assert delivered_before_cut < COUNT  # the cut really fell mid-burst
            assert waited > 0  # and messages met it in the consumer: they waited, spent nothing
    finally:
        await proxy.close()
