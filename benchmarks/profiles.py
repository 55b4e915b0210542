"""``make profile``: where each process spends its CPU under the loads ``make bench`` measures.

Starts the system as the bench does, then records each named process with py-spy while it runs:
single requests (c=50, with 1 worker and again with the gateway's workers at ``PROFILE_WORKERS``)
and batches of 1,000 (c=4) into the gateway with the consumers stopped, then email and push end
to end, then an email campaign (batches, consumers running). Writes the
raw profiles (``py-spy record --format raw``: one line per distinct stack with its sample count)
to ``BENCH_WORKDIR`` or a fresh directory, and prints each profile's samples grouped by part
(:func:`shares`) with the share of them that was waiting for a CPU: the table
``docs/benchmarks.md`` quotes.

Options: ``PROFILE_SECONDS`` (intake loads, 20), ``PROFILE_COUNT`` (notifications end to end,
3,000), ``PROFILE_RATE`` (samples per second, 50), ``PROFILE_WORKERS`` (the single requests again
with the gateway's workers at this count, 2; 1: not again). Each intake load also prints the
gateway's CPU a request (the scheduler's run time of its threads).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.campaign import run_campaign
from benchmarks.config import BenchConfig, BenchFailure, Progress, run_until_stopped
from benchmarks.e2e import run_e2e
from benchmarks.intake import WORK_QUEUES, batch_endpoint, workers_env, workers_setting
from benchmarks.procstat import all_stats, run_times, with_descendants
from benchmarks.stack import Bench, open_bench
from benchmarks.wrk import WrkResult, ensure_wrk, run_for
from tests.support.isolation import VhostPool

# A stack that passes through one of these belongs to that part, wherever it ends.
OWNERS: list[tuple[str, tuple[str, ...]]] = [
    ("history recorder (Redis stream to PostgreSQL)", ("HistoryRecorder",)),
    ("the send: FCM (aiohttp)", ("FcmProvider",)),
    ("the send: SMTP (aiosmtplib, MIME)", ("SmtpProvider", "aiosmtplib", "email_service/mime")),
    ("renders and user lookups from our services", ("ServiceClient", "Coalescer._answer")),
    ("render (Jinja sandbox)", ("_render_all", "render_sync")),
    ("worker threads", ("concurrent/futures/thread", "anyio/_backends/_asyncio.py:1113")),
]
# Otherwise the innermost frame that names one of these decides.
LEAVES: list[tuple[str, tuple[str, ...]]] = [
    ("Redis calls", ("redis/", "AutoPipelineRedis")),
    ("publish and ack (aio-pika, aiormq)", ("aio_pika/", "aiormq/", "pamqp/")),
    ("validation and serialization (pydantic, orjson)", ("pydantic", "orjson")),
    ("logging and metrics", ("structlog", "prometheus_client", "libs/metrics")),
    ("JWT verification", ("jwt/", "cryptography")),
    (
        "HTTP server and framework (uvicorn, Starlette, FastAPI, our middleware)",
        (
            "uvicorn/protocols",
            "uvicorn/middleware",
            "starlette/",
            "fastapi/",
            "libs/http/middleware",
        ),
    ),
    (
        "our own code",
        ("gateway/", "template_service/", "libs/", "email_service/", "push_service/"),
    ),
]
OTHER = "event loop, sockets, other"
# Innermost frames that are a thread waiting, which py-spy's idle detection misses on these
# machines: an idle worker of a thread pool blocked in ``work_queue.get`` (it was a third of
# template_service's samples, read as the cost of its render thread hop). Left out of the shares.
WAITING = ("_worker (concurrent/futures/thread.py",)


def shares(raw: Iterable[str]) -> dict[str, float]:
    """Percent of samples per part, largest first, from py-spy's raw format
    (``frame;frame;...;innermost count`` per line); threads waiting (:data:`WAITING`) left out."""
    counts: Counter[str] = Counter()
    for line in raw:
        stack, _, number = line.rstrip("\n").rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = stack.split(";")
        if frames[-1].startswith(WAITING):
            continue
        counts[_part(frames)] += int(number)
    total = sum(counts.values()) or 1
    return {part: round(n * 100 / total, 1) for part, n in counts.most_common()}


def _part(frames: list[str]) -> str:
    joined = ";".join(frames)
    for part, keys in OWNERS:
        if any(key in joined for key in keys):
            return part
    for frame in reversed(frames):
        for part, keys in LEAVES:
            if any(key in frame for key in keys):
                return part
    return OTHER


WAITING_FOR_A_CPU = "(runnable, waiting for a CPU: counted in the samples above)"
"""py-spy counts a thread that is runnable as active, whether or not it has a CPU. On two busy
cores that is a large part of the samples (email_service waited 3.8 s for a CPU while it ran
5.6 s in one campaign), and it falls on whatever the thread did last, most often the write that
woke another process (Redis, RabbitMQ), which then took the CPU. The table shows the share for
each profile, from the scheduler's own accounting over the recording."""


RunTimes = dict[int, tuple[float, float]]


def ran_and_waited(before: RunTimes, after: RunTimes) -> tuple[float, float]:
    """Seconds on a CPU and seconds runnable, waiting for one, between two readings of
    :func:`run_times`, over the threads in both."""
    ran = sum(after[p][0] - before[p][0] for p in before if p in after)
    waited = sum(after[p][1] - before[p][1] for p in before if p in after)
    return ran, waited


def waiting_share(before: RunTimes, after: RunTimes) -> float:
    """Percent of the runnable time spent waiting for a CPU, over the threads in both readings."""
    ran, waited = ran_and_waited(before, after)
    return round(waited * 100 / (ran + waited), 1) if ran + waited > 0 else 0.0


class Recording:
    """py-spy recording every process of one service until stopped."""

    def __init__(self, bench: Bench, service: str, out: Path, rate: int) -> None:
        targets = {pid: out.with_name(f"{out.name}-{pid}.txt") for pid in bench.pids(service)}
        self.files = list(targets.values())
        # a service's worker processes too
        self._measured = with_descendants(targets, all_stats())
        self._run_times = self._threads()
        self.waiting = 0.0
        self.cpu_seconds = 0.0
        self._spies = [
            subprocess.Popen(
                [
                    *(_py_spy(), "record", "--format", "raw", "--subprocesses"),
                    *("-r", str(rate), "-p", str(pid), "-o", str(path)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid, path in targets.items()
        ]

    def _threads(self) -> dict[int, tuple[float, float]]:
        return {tid: t for pid in self._measured for tid, t in run_times(pid).items()}

    def stop(self) -> list[Path]:
        after = self._threads()
        self.waiting = waiting_share(self._run_times, after)
        self.cpu_seconds = ran_and_waited(self._run_times, after)[0]
        for spy in self._spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for spy in self._spies:
            spy.wait(60)
        return [f for f in self.files if f.exists()]


def _py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise BenchFailure("py-spy is missing: `make install` installs it (a dev dependency)")
    return found


async def profile(bench: Bench, out: Path) -> dict[str, dict[str, float]]:
    seconds = float(os.environ.get("PROFILE_SECONDS", "20"))
    count = int(os.environ.get("PROFILE_COUNT", "3000"))
    rate = int(os.environ.get("PROFILE_RATE", "50"))
    workers = int(os.environ.get("PROFILE_WORKERS", "2"))
    say = bench.say
    results: dict[str, dict[str, float]] = {}

    async def recorded(label: str, services: list[str], work: Awaitable[object]) -> None:
        recordings = {s: Recording(bench, s, out / f"{label}-{s}", rate) for s in services}
        done = None
        try:
            done = await work
        finally:
            for service, recording in recordings.items():
                lines: list[str] = []
                for path in recording.stop():
                    lines += path.read_text().splitlines()
                results[f"{label}: {service}"] = shares(lines) | {
                    WAITING_FOR_A_CPU: recording.waiting
                }
        if isinstance(done, WrkResult) and done.items:  # an intake load: CPU a notification
            for service, recording in recordings.items():
                ms = recording.cpu_seconds * 1000 / done.items
                say(
                    f"  {label}: {done.per_second:,.0f} notifications accepted/s, "
                    f"{service} CPU {ms:.3f} ms each"
                )

    await bench.stop_consumers()
    await run_for(bench.gateway, await bench.load("email", 10), 2)  # warm up
    say(f"profile: {seconds:g} s of single requests at c=50 (consumers stopped)")
    load = await bench.load("email", 50)
    await recorded("single", ["gateway"], run_for(bench.gateway, load, seconds))
    await bench.purge_until_quiet(*WORK_QUEUES)
    setting = workers_setting()
    if setting and workers > 1:
        say(f"profile: the same with the gateway's {workers} workers")
        await bench.restart_gateway(workers_env(setting, workers))
        await run_for(bench.gateway, load, 2)  # warm up
        label = f"single, {workers} workers"
        await recorded(label, ["gateway"], run_for(bench.gateway, load, seconds))
        await bench.purge_until_quiet(*WORK_QUEUES)
        await bench.restart_gateway({})
    batch = await batch_endpoint(bench.gateway)
    if batch is not None:
        path, prop = batch
        say(f"profile: {seconds:g} s of batches of 1,000 at c=4")
        load = await bench.load("email", 4, path=path, batch=1000, batch_field=prop)
        await recorded("batch", ["gateway"], run_for(bench.gateway, load, seconds))
        await bench.purge_until_quiet(*WORK_QUEUES)
    await bench.start_consumers()
    await run_e2e(bench, "email", 300, label="warm-up", connections=50)
    for kind, services in (
        ("email", ["gateway", "email_service", "template_service"]),
        ("push", ["gateway", "push_service", "template_service"]),
    ):
        e2e = run_e2e(bench, kind, count, label=kind, connections=50)
        await recorded(kind, services, e2e)
    if batch is not None:
        campaign = run_campaign(bench, "email", count, label="campaign-email")
        await recorded("campaign", ["gateway", "email_service", "template_service"], campaign)
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    parts = [p for p, _ in OWNERS] + [p for p, _ in LEAVES] + [OTHER, WAITING_FOR_A_CPU]
    used = [p for p in parts if any(r.get(p) for r in results.values())]
    lines = [
        "| share of samples | " + " | ".join(results) + " |",
        "| --- |" + " ---: |" * len(results),
    ]
    for part in used:
        cells = [f"{r[part]:g} %" if r.get(part) else "" for r in results.values()]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main() -> int:
    config = BenchConfig.from_env({**os.environ, "BENCH_QUICK": "1"})
    say = Progress()
    ensure_wrk()
    _py_spy()
    out = Path(os.environ.get("BENCH_WORKDIR") or tempfile.mkdtemp(prefix="herald-profile-"))
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    pool = VhostPool(batch=2)
    try:
        async with open_bench(config, pool, out, say) as bench:
            results = await profile(bench, out)
    except BenchFailure as exc:
        say(f"profile FAILED: {exc}")
        return 1
    finally:
        pool.close()
    print()
    print(table(results))
    print()
    say(f"raw profiles (py-spy --format raw; flamegraph.pl or speedscope read them): {out}")
    return 0


if __name__ == "__main__":
    run_until_stopped(main, "profile")
