from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.system import System

pytestmark = pytest.mark.chaos

REPORT = Path(__file__).resolve().parents[2] / ".run" / "chaos-results.jsonl"


def report(test: str, **figures: object) -> None:
    """Append what a chaos test saw to .run/chaos-results.jsonl (and print it)."""
    REPORT.parent.mkdir(exist_ok=True)
    line = json.dumps({"test": test, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures})
    with REPORT.open("a") as out:
        out.write(line + "\n")
    print(f"\nchaos: {line}")


@dataclass
class Burst:
    """Notifications sent in the background; which were accepted (202) and which refused."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def send_burst(
    system: System,
    *,
    user_id: str,
    template_code: str,
    count: int,
    concurrency: int = 40,
    rate: float | None = None,
    channel: str = "email",
) -> Burst:
    """Send ``count`` notifications (at most ``rate`` per second); returns when all answered."""
    burst = Burst()
    headers = await system.admin()
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one(i: int) -> None:
        if rate:
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        async with gate:
            try:
                response = await system.http.post(
                    f"{system.url('gateway')}/api/v1/notifications/",
                    json={
                        "notification_type": channel,
                        "user_id": user_id,
                        "template_code": template_code,
                        "variables": {"name": f"n{i}"},
                        "request_id": f"burst-{uuid.uuid4().hex}",
                    },
                    headers=headers,
                )
            except httpx.HTTPError:
                burst.errors += 1
                return
        if response.status_code == 202:
            burst.accepted.append(response.json()["data"]["notification_id"])
        else:
            burst.refused[response.status_code] = burst.refused.get(response.status_code, 0) + 1

    await asyncio.gather(*(one(i) for i in range(count)))
    burst.done.set()
    return burst


async def wait_delivered(system: System, ids: list[str], timeout: float) -> float:
    """Wait until the sink holds every id; returns when that happened (monotonic)."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= set(system.sink.handler.counts()):
            return time.monotonic()
        await asyncio.sleep(0.1)
    missing = wanted - set(system.sink.handler.counts())
    raise AssertionError(f"{len(missing)} of {len(wanted)} not delivered after {timeout}s")


def duplicates(system: System) -> int:
    return sum(n - 1 for n in system.sink.handler.counts().values() if n > 1)


async def metric_total(system: System, service: str, pattern: str) -> float:
    """Sum a Prometheus sample over every live process of ``service``."""
    total = 0.0
    regex = re.compile(rf"^{pattern} ([0-9.e+]+)$", re.MULTILINE)
    for process in system.stack.find(service):
        text = (await system.http.get(f"{process.url}/metrics")).text
        total += sum(float(v) for v in regex.findall(text))
    return total


async def setup_email(system: System) -> tuple[str, str]:
    code = f"chaos-{uuid.uuid4().hex[:6]}"
    await system.create_template(
        code=code, name="Chaos", type="email", subject="Hi {{ name }}", content="<p>{{ name }}</p>"
    )
    user = await system.register_user()
    return user["id"], code
