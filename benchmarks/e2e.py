"""End to end: notifications sent through the gateway until each is at the SMTP sink or the FCM
stand-in, counted there by notification id: none lost, none twice.

wrk sends exactly ``count`` unique notifications and records, per accepted one, its notification id
and when its request was sent; the sink and the stand-in record when each arrived (both processes
of their own, same clock). From these: delivered per second (first request to last arrival),
request-to-delivery percentiles, and the CPU each process used per delivered notification.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.config import Progress
from benchmarks.procstat import cpu_delta, rss_peaks
from benchmarks.stack import Bench
from benchmarks.stats import distribution_ms
from benchmarks.wrk import run_count

T = TypeVar("T")
SETTLE_SECONDS = 1.0  # after the last arrival, how long to watch for a late duplicate
PROGRESS_EVERY = 3.0


class Arrivals:
    """Arrival times by notification id, read from a stand-in's record as it grows."""

    def __init__(self, record: Path) -> None:
        self.record = record
        self.offset = record.stat().st_size  # earlier phases' lines are not this run's
        self._partial = b""
        self.times: defaultdict[str, list[float]] = defaultdict(list)

    def read(self) -> None:
        with self.record.open("rb") as handle:
            handle.seek(self.offset)
            chunk = self._partial + handle.read()
            self.offset = handle.tell()
        *lines, self._partial = chunk.split(b"\n")
        for line in lines:
            if line:
                entry = json.loads(line)
                self.times[str(entry["notification_id"])].append(float(entry["received_at"]))

    def __len__(self) -> int:
        return sum(len(times) for times in self.times.values())

    @classmethod
    def at(cls, bench: Bench, kind: str) -> Arrivals:
        """Where notifications of ``kind`` arrive: the SMTP sink's record or the FCM stand-in's."""
        system = bench.system
        return cls(system.sink.record if kind == "email" else system.fcm.record)


async def run_e2e(
    bench: Bench, kind: str, count: int, *, label: str, connections: int, rate: float = 0.0
) -> dict[str, Any]:
    """Send ``count`` notifications of ``kind`` and wait until every accepted one arrived."""
    config, say = bench.config, bench.say
    arrivals = Arrivals.at(bench, kind)
    load = await bench.load(kind, connections, rate=rate)
    pace = f" at {rate:g}/s" if rate else ""
    say(f"{label}: {count:,} {kind} notifications, {connections} in flight{pace}")
    accepted_so_far = 0

    def progress(accepted: int) -> None:
        nonlocal accepted_so_far
        accepted_so_far = accepted

    sent, result = await deliver(
        bench,
        label,
        arrivals,
        run_count(
            bench.gateway,
            load,
            count,
            bench.workdir / f"wrk-{label}",
            stall_seconds=config.stall_seconds,
            on_progress=progress,
        ),
        records=lambda sent: sent.records,
        count=count,
        accepted=lambda: accepted_so_far,
        clients=lambda sent: {"wrk": sent.cpu_seconds or 0},
    )
    result["requests"] = sent.summary() | {"wrk_cpu_seconds": sent.cpu_seconds}
    result["connections"], result["rate"] = connections, rate or None
    report_run(say, label, result, sent.first_refusal)
    return result


async def deliver(
    bench: Bench,
    label: str,
    arrivals: Arrivals,
    sending: Coroutine[Any, Any, T],
    *,
    records: Callable[[T], list[Any]],
    count: int,
    accepted: Callable[[], int],
    clients: Callable[[T], dict[str, float]] = lambda _: {},
) -> tuple[T, dict[str, Any]]:
    """Run ``sending`` while watching the arrivals, until every notification it reports accepted
    (``records``, as :func:`account` reads them) arrived; returns what it returned and the
    accounting of ``count`` requested, with the CPU per delivered notification of every process
    (``clients``: the load generator's seconds) and the resident-memory peaks."""
    cpu_before = bench.stat.cpu()
    async with rss_peaks(bench.stat) as peaks:
        task = asyncio.create_task(sending)
        await _await_arrivals(bench, label, arrivals, task, records, accepted)
        cpu_after = bench.stat.cpu()
    sent = task.result()
    await asyncio.sleep(SETTLE_SECONDS)
    arrivals.read()
    result = account(records(sent), arrivals, count)
    result |= _cpu_per_notification(
        bench, cpu_before, cpu_after, result["delivered"], clients(sent)
    )
    result["rss_mb_peak"] = {name: round(value / 2**20, 1) for name, value in peaks.items()}
    return sent, result


async def _await_arrivals(
    bench: Bench,
    label: str,
    arrivals: Arrivals,
    sending: asyncio.Task[T],
    records: Callable[[T], list[Any]],
    accepted: Callable[[], int],
) -> None:
    """Until every notification the finished ``sending`` accepted arrived, showing progress.
    Gives up when nothing arrives for the stall time (what is missing is then counted as lost);
    a sending that failed ends the wait with its error."""
    loop = asyncio.get_running_loop()
    started = last_report = last_change = loop.time()
    seen = -1
    stall = bench.config.stall_seconds
    wanted: set[str] | None = None
    while True:
        await asyncio.sleep(0.25)
        arrivals.read()
        now = loop.time()
        if now - last_report >= PROGRESS_EVERY:
            last_report = now
            bench.say(
                f"  {label}: accepted {accepted():,}, delivered {len(arrivals):,} "
                f"({now - started:.0f} s)"
            )
        if len(arrivals) != seen:
            seen, last_change = len(arrivals), now
        if wanted is None and sending.done():
            wanted = {r.notification_id for r in records(sending.result())}
        if wanted is not None:
            if wanted <= arrivals.times.keys():
                return
            if now - last_change > stall:
                bench.say(f"  {label}: nothing delivered for {stall:.0f} s")
                return


def _cpu_per_notification(
    bench: Bench,
    before: dict[str, float],
    after: dict[str, float],
    delivered: int,
    clients: dict[str, float],
) -> dict[str, Any]:
    """CPU ms per delivered notification by process (``clients``: the load generator's seconds),
    and the sum over our own processes."""
    per = max(delivered, 1)
    used = cpu_delta(before, after) | clients
    by_process = {name: round(seconds * 1000 / per, 3) for name, seconds in used.items()}
    ours = sum(by_process[g.name] for g in bench.stat.groups if g.ours)
    return {"cpu_ms_per_notification": by_process, "cpu_ms_per_notification_ours": round(ours, 3)}


def report_run(say: Progress, label: str, result: dict[str, Any], first_refusal: str) -> None:
    verdict = "ok" if result["ok"] else "FAILED"
    if result["refused"]:
        say(f"  {label}: WARNING {result['refused']} requests refused, the first: {first_refusal}")
    say(
        f"  {label}: {result['delivered']:,}/{result['accepted']:,} delivered, "
        f"{result['lost']} lost, {result['duplicated']} duplicated ({verdict}); "
        f"{result['delivered_per_second']:,.0f}/s, request->delivery p99 "
        f"{result['request_to_delivery_ms']['p99']:,.0f} ms"
    )


def account(records: list[Any], arrivals: Arrivals, count: int) -> dict[str, Any]:
    sent_at = {r.notification_id: r.sent_at for r in records}
    delivered = [nid for nid in sent_at if nid in arrivals.times]
    lost = sorted(set(sent_at) - set(delivered))
    twice = {nid: len(arrivals.times[nid]) for nid in delivered if len(arrivals.times[nid]) > 1}
    unseen = [nid for nid in arrivals.times if nid not in sent_at]
    first_sent = min(sent_at.values(), default=time.time())
    last_arrival = max((arrivals.times[nid][0] for nid in delivered), default=first_sent)
    seconds = max(last_arrival - first_sent, 1e-6)
    answered = [r.answered_at for r in records]
    return {
        "ok": not lost and not twice,
        "requested": count,
        "accepted": len(sent_at),
        "refused": count - len(sent_at),
        "delivered": len(delivered),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "duplicated": len(twice),
        "duplicated_ids": dict(list(twice.items())[:20]),
        "delivered_without_answer": len(unseen),
        "seconds": round(seconds, 2),
        "delivered_per_second": round(len(delivered) / seconds, 1),
        "accepted_per_second": round(
            len(answered) / max(max(answered, default=0) - first_sent, 1e-6), 1
        ),
        "request_to_delivery_ms": distribution_ms(
            [arrivals.times[nid][0] - sent_at[nid] for nid in delivered]
        ),
    }
