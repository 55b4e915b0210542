"""A campaign: many notifications sent through the batch endpoint while the consumers run, as a
team sending a newsletter or an announcement would, until every one arrived at the SMTP sink or
the FCM stand-in: none lost, none twice.

Each notification has its own variables (a link per recipient, as unsubscribe and tracking links
are), so every one is rendered; the users are the bench's, in turn. ``BENCH_CAMPAIGN_CONNECTIONS``
batches of ``BENCH_BATCH_SIZE`` are in flight. The figure is delivered per second from the first
batch sent to the last arrival, and what that makes of 100,000 notifications.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from benchmarks.e2e import (
    SETTLE_SECONDS,
    Arrivals,
    account,
    await_arrivals,
    cpu_per_notification,
    report_run,
)
from benchmarks.intake import batch_endpoint
from benchmarks.procstat import rss_peaks
from benchmarks.stack import TEMPLATES, Bench
from benchmarks.wrk import Accepted

CAMPAIGN_SIZE = 100_000
"""The campaign the figure is also given for (minutes for this many at the measured rate)."""
ANSWER_TIMEOUT_SECONDS = 120.0


def notification(kind: str, user: str, request_id: str, n: int) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "user_id": user,
        "notification_type": kind,
        "template_code": TEMPLATES[kind]["code"],
        "variables": {"name": f"Reader {n}", "link": f"https://example.com/c/{request_id}"},
    }


class Sender:
    """Posts the batches, ``connections`` at a time, and keeps what each item was answered."""

    def __init__(self, http: httpx.AsyncClient, path: str, field: str) -> None:
        self._http, self._path, self._field = http, path, field
        self.accepted: list[Accepted] = []
        self.refused = 0
        self.first_refusal = ""

    async def run(self, batches: list[list[dict[str, Any]]], connections: int) -> None:
        pending = iter(batches)

        async def worker() -> None:
            for batch in pending:  # one iterator shared by the workers: each batch once
                await self._post(batch)

        await asyncio.gather(*(worker() for _ in range(connections)))

    async def _post(self, batch: list[dict[str, Any]]) -> None:
        body: Any = {self._field: batch} if self._field else batch
        sent_at = time.time()
        response = await self._http.post(self._path, json=body)
        answered_at = time.time()
        if response.status_code not in (202, 207):
            self._refuse(len(batch), f"{response.status_code} {response.text[:300]}")
            return
        for item in response.json()["data"]["items"]:
            if item["outcome"] == "accepted":
                self.accepted.append(
                    Accepted(item["notification_id"], item["request_id"], sent_at, answered_at)
                )
            else:
                self._refuse(1, f"{item['outcome']}: {item.get('error')}")

    def _refuse(self, count: int, why: str) -> None:
        self.refused += count
        self.first_refusal = self.first_refusal or why


async def run_campaign(bench: Bench, kind: str, count: int, *, label: str) -> dict[str, Any]:
    """Send ``count`` notifications of ``kind`` in batches and wait until each accepted one
    arrived: the counts and figures :func:`benchmarks.e2e.run_e2e` gives, or a note when the
    gateway has no batch endpoint."""
    config, say, system = bench.config, bench.say, bench.system
    found = await batch_endpoint(bench.gateway)
    if found is None:
        return {"note": "n/a: no POST /api/v1/notifications/batch"}
    path, field = found
    size, connections = config.batch_size, config.campaign_connections
    run = uuid.uuid4().hex[:10]
    users = bench.users
    batches = [
        [
            notification(kind, users[n % len(users)], f"{run}-{n}", n)
            for n in range(start, min(start + size, count))
        ]
        for start in range(0, count, size)
    ]
    arrivals = Arrivals(system.sink.record if kind == "email" else system.fcm.record)
    token = await bench.token()
    say(
        f"{label}: {count:,} {kind} notifications in batches of {size:,}, {connections} in "
        "flight, consumers running"
    )
    async with httpx.AsyncClient(
        base_url=bench.gateway,
        headers={"Authorization": f"Bearer {token}"},
        timeout=ANSWER_TIMEOUT_SECONDS,
    ) as http:
        sender = Sender(http, path, field)
        cpu_before = bench.stat.cpu()
        async with rss_peaks(bench.stat) as peaks:
            sending = asyncio.create_task(sender.run(batches, connections))

            def wanted() -> set[str] | None:
                if not sending.done():
                    return None
                sending.result()  # a failed request ends the run with its error
                return {a.notification_id for a in sender.accepted}

            await await_arrivals(bench, label, arrivals, wanted, lambda: len(sender.accepted))
            cpu_after = bench.stat.cpu()
    await asyncio.sleep(SETTLE_SECONDS)
    arrivals.read()
    result = account(sender.accepted, arrivals, count)
    result |= cpu_per_notification(bench, cpu_before, cpu_after, result["delivered"], {})
    result["rss_mb_peak"] = {name: round(value / 2**20, 1) for name, value in peaks.items()}
    result["batch_size"], result["connections"] = size, connections
    rate = result["delivered_per_second"]
    result["minutes_per_campaign"] = round(CAMPAIGN_SIZE / rate / 60, 1) if rate else None
    result["campaign_size"] = CAMPAIGN_SIZE
    report_run(say, label, result, sender.first_refusal)
    return result
