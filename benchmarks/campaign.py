"""A campaign: many notifications sent through the batch endpoint while the consumers run, as a
team sending a newsletter or an announcement would, until every one arrived at the SMTP sink or
the FCM stand-in: none lost, none twice.

Each notification has its own variables (a link per recipient, as unsubscribe and tracking links
are), so every one is rendered; the users are the bench's, in turn. ``BENCH_CAMPAIGN_CONNECTIONS``
batches of ``BENCH_BATCH_SIZE`` are in flight. The figure is delivered per second from the first
batch sent to the last arrival, and what that makes of 100,000 notifications.

Once the whole campaign is queued, a few urgent notifications (priority 10, single requests, one
every ``URGENT_EVERY_SECONDS``) are sent into the backlog, as a password reset would be during a
newsletter: how long they take says whether a campaign holds up transactional messages.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from benchmarks.config import BenchFailure
from benchmarks.e2e import Arrivals, deliver, report_run
from benchmarks.intake import batch_endpoint
from benchmarks.stack import TEMPLATES, Bench
from benchmarks.stats import distribution_ms
from benchmarks.wrk import Accepted
from libs.http.lifespan import CLIENT_KEEPALIVE_EXPIRY_SECONDS as KEEPALIVE_SECONDS

CAMPAIGN_SIZE = 100_000
"""The campaign the figure is also given for (minutes for this many at the measured rate)."""
ANSWER_TIMEOUT_SECONDS = 120.0
URGENT_COUNT = 20
URGENT_EVERY_SECONDS = 0.1
URGENT_PRIORITY = 10
SINGLE_PATH = "/api/v1/notifications/"
TRANSPORT_ATTEMPTS = 3


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
        self.resent = 0
        """Requests posted again after their answer was lost in transport."""

    async def run(self, batches: list[list[dict[str, Any]]], connections: int) -> None:
        pending = iter(batches)

        async def worker() -> None:
            for batch in pending:  # one iterator shared by the workers: each batch once
                await self._post(batch)

        await asyncio.gather(*(worker() for _ in range(connections)))

    async def urgent(self, notifications: list[dict[str, Any]]) -> list[Accepted]:
        """Each as a single request, one every ``URGENT_EVERY_SECONDS``; the accepted ones."""
        accepted = []
        for body in notifications:
            sent_at = time.time()
            response = await self._post_again_if_lost(SINGLE_PATH, body)
            answered_at = time.time()
            if response.status_code != 202:
                self._refuse(1, f"urgent: {response.status_code} {response.text[:300]}")
            else:
                data = response.json()["data"]
                accepted.append(
                    Accepted(data["notification_id"], data["request_id"], sent_at, answered_at)
                )
            await asyncio.sleep(URGENT_EVERY_SECONDS)
        return accepted

    async def _post_again_if_lost(self, path: str, body: Any) -> httpx.Response:
        """If the answer is lost in transport, post again: the notifications keep their request
        ids, so what was accepted the first time is answered as replayed, not queued twice (the
        gateway's idempotency, which the lost and duplicated counts then check)."""
        for _ in range(TRANSPORT_ATTEMPTS - 1):
            try:
                return await self._http.post(path, json=body)
            except httpx.TransportError:
                self.resent += 1
        return await self._http.post(path, json=body)

    async def _post(self, batch: list[dict[str, Any]]) -> None:
        body: Any = {self._field: batch} if self._field else batch
        sent_at = time.time()
        response = await self._post_again_if_lost(self._path, body)
        answered_at = time.time()
        if response.status_code not in (202, 207):
            self._refuse(len(batch), f"{response.status_code} {response.text[:300]}")
            return
        for item in response.json()["data"]["items"]:
            if item["outcome"] in ("accepted", "replayed"):
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
    config, say = bench.config, bench.say
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
    arrivals = Arrivals.at(bench, kind)
    token = await bench.token()
    say(
        f"{label}: {count:,} {kind} notifications in batches of {size:,}, {connections} in "
        "flight, consumers running"
    )
    async with httpx.AsyncClient(
        base_url=bench.gateway,
        headers={"Authorization": f"Bearer {token}"},
        timeout=ANSWER_TIMEOUT_SECONDS,
        limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS),  # below the server's 5 s
    ) as http:
        sender = Sender(http, path, field)
        urgent = [
            notification(kind, users[n % len(users)], f"{run}-urgent-{n}", n)
            | {"priority": URGENT_PRIORITY}
            for n in range(URGENT_COUNT)
        ]

        async def send_all() -> list[Accepted]:
            """The campaign, then the urgent ones into the backlog it left (those returned)."""
            try:
                await sender.run(batches, connections)
                return await sender.urgent(urgent)
            except httpx.HTTPError as exc:
                raise BenchFailure(
                    f"{label}: a request failed {TRANSPORT_ATTEMPTS} times in transport: {exc!r}"
                ) from exc

        urgent_accepted, result = await deliver(
            bench,
            label,
            arrivals,
            send_all(),
            records=lambda urgent_accepted: [*sender.accepted, *urgent_accepted],
            count=count + URGENT_COUNT,
            accepted=lambda: len(sender.accepted),
        )
    result["urgent"] = {
        "count": URGENT_COUNT,
        "priority": URGENT_PRIORITY,
        "accepted": len(urgent_accepted),
        "delivered": sum(1 for a in urgent_accepted if a.notification_id in arrivals.times),
        "request_to_delivery_ms": distribution_ms(
            [
                arrivals.times[a.notification_id][0] - a.sent_at
                for a in urgent_accepted
                if a.notification_id in arrivals.times
            ]
        ),
    }
    result["batch_size"], result["connections"] = size, connections
    result["requests_resent"] = sender.resent
    rate = result["delivered_per_second"]
    result["minutes_per_campaign"] = round(CAMPAIGN_SIZE / rate / 60, 1) if rate else None
    result["campaign_size"] = CAMPAIGN_SIZE
    report_run(say, label, result, sender.first_refusal)
    late = result["urgent"]["request_to_delivery_ms"]
    say(
        f"  {label}: {URGENT_COUNT} urgent (priority {URGENT_PRIORITY}) sent into the backlog: "
        f"request->delivery p50 {late['p50']:,.0f} ms, max {late['max']:,.0f} ms"
    )
    return result
