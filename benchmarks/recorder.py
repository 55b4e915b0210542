"""The history recorder alone: CPU of the recording process per outbox entry.

``.venv/bin/python -m benchmarks.recorder`` (``RECORDER_COUNT``, default 10,000 notifications)
creates that many notifications through the Redis status store (own key prefix), moves half of
them to ``processing`` (1.5 outbox entries a notification, as intake followed by a first report),
then lets one :class:`gateway.history.HistoryRecorder` record the whole stream into a fresh
PostgreSQL database, and prints this process's CPU (``time.process_time``) and the wall time per
entry. The wall time includes PostgreSQL's own work; the CPU is what the recorder costs the
gateway process it runs in. Needs the shared Redis and PostgreSQL; leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.ext.asyncio import create_async_engine

from gateway.config import MIGRATIONS_DIR
from gateway.history import HistoryRecorder
from libs.notification.message import Channel
from libs.notification.status import NewNotification, Status
from libs.storage.db import upgrade
from libs.storage.redis import Keys, create_redis
from libs.storage.status_store import RedisStatusStore
from tests.support.isolation import temp_database


async def measure(count: int) -> tuple[int, float, float]:
    """(entries recorded, CPU us per entry, wall us per entry)."""
    async with temp_database("recorder") as url:
        await asyncio.to_thread(upgrade, MIGRATIONS_DIR, url)
        engine = create_async_engine(url)
        redis = create_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        keys = Keys(f"bench-recorder-{uuid.uuid4().hex[:8]}:")
        try:
            store = RedisStatusStore(redis, keys, 3600)
            now = datetime.now(UTC)
            made = [
                NewNotification(
                    notification_id=str(uuid.uuid4()),
                    request_id=f"r-{n}",
                    channel=Channel.EMAIL,
                    user_id=str(uuid.uuid4()),
                    template_code="welcome",
                    priority=5,
                    created_at=now,
                    language=None,
                    owner="bench",
                )
                for n in range(count)
            ]
            for start in range(0, count, 1000):
                await store.create_many(made[start : start + 1000])
            for n in made[: count // 2]:
                await store.transition(n.notification_id, Status.PROCESSING, event="p", service="b")
            recorder = HistoryRecorder(redis, engine, keys.history_stream(), "bench", batch=500)
            recorded = 0
            cpu, wall = time.process_time(), time.perf_counter()
            while batch := await recorder.record_once(block_ms=10):
                recorded += batch
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            async for key in redis.scan_iter(match=f"{keys.prefix}*", count=1000):
                await redis.delete(key)
            await redis.aclose()
            await engine.dispose()
    return recorded, cpu / recorded * 1e6, wall / recorded * 1e6


def main() -> None:
    count = int(os.environ.get("RECORDER_COUNT", "10000"))
    print(f"recorder: {count:,} notifications, {count // 2:,} of them moved once", flush=True)
    recorded, cpu, wall = asyncio.run(measure(count))
    print(f"recorded {recorded:,} entries: CPU {cpu:.1f} us an entry, wall {wall:.1f} us")


if __name__ == "__main__":
    main()
