"""Driving an HTTP endpoint with wrk (Debian's package) and ``notify.lua``.

wrk is a C load generator: two threads of it take a small share of a core where a Python client
took a whole one. Two ways to run it:

- for a fixed time (``seconds``): requests per second and latency percentiles;
- for a count (``count``): exactly that many unique notifications, each accepted one written to
  a file per thread with its request's send time (``record``), for end-to-end accounting.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.config import BenchFailure
from benchmarks.procstat import read_stat

SCRIPT = Path(__file__).with_name("notify.lua")
COUNT_RUN_LIMIT = "3600s"  # wrk needs a duration; a count run is stopped when it is complete


def ensure_wrk() -> str:
    """wrk's path (``make tools`` installs Debian's package when it is missing)."""
    found = shutil.which("wrk")
    if not found:
        raise BenchFailure("wrk is not installed: `make tools` (or apt-get install wrk)")
    return found


@dataclass(frozen=True)
class Load:
    """What to send: notifications of one kind, spread over users, on ``connections``."""

    kind: str
    template: str
    users: Sequence[str]
    token: str = ""
    path: str = "/api/v1/notifications/"
    connections: int = 50
    threads: int = 2
    batch: int = 0
    batch_field: str = ""
    rate: float = 0.0


@dataclass(frozen=True)
class Accepted:
    """One accepted notification: its id and request id, when it was sent and answered."""

    notification_id: str
    request_id: str
    sent_at: float
    answered_at: float


@dataclass
class WrkResult:
    seconds: float
    requests: int
    answered: int
    accepted: int
    items: int
    replays: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    first_refusal: str
    cpu_seconds: float | None = None
    records: list[Accepted] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        """Notifications accepted per second (a batch request counts its items)."""
        return self.items / self.seconds if self.seconds else 0.0

    @property
    def failed(self) -> int:
        return self.answered - self.accepted + sum(self.socket_errors.values())

    def summary(self) -> dict[str, Any]:
        return {
            "per_second": round(self.per_second, 1),
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "accepted": self.items,
            "failed": self.failed,
            "statuses": self.statuses,
            "socket_errors": {k: v for k, v in self.socket_errors.items() if v},
            "latency_ms": self.latency_ms,
        } | ({"first_refusal": self.first_refusal} if self.first_refusal else {})


def _parse(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("WRKJSON "):
            return dict(json.loads(line[len("WRKJSON ") :]))
    raise BenchFailure(f"wrk printed no result:\n{output[-2000:]}")


def _result(data: dict[str, Any], cpu: float | None, records: list[Accepted]) -> WrkResult:
    latency = data["latency_us"]
    return WrkResult(
        seconds=data["duration_us"] / 1e6,
        requests=data["requests"],
        answered=data["answered"],
        accepted=data["accepted"],
        items=data["items"],
        replays=data["replays"],
        statuses=data["statuses"],
        socket_errors=data["socket_errors"],
        latency_ms={k: round(latency[k] / 1000, 2) for k in ("mean", "p50", "p90", "p99", "max")},
        first_refusal=data["first_refusal"],
        cpu_seconds=cpu,
        records=records,
    )


def _environment(load: Load, count: int, record: Path | None) -> dict[str, str]:
    return os.environ | {
        "BENCH_PATH": load.path,
        "BENCH_TOKEN": load.token,
        "BENCH_RUN": f"b{uuid.uuid4().hex[:10]}",
        "BENCH_KIND": load.kind,
        "BENCH_TEMPLATE": load.template,
        "BENCH_USERS": ",".join(load.users),
        "BENCH_BATCH": str(load.batch),
        "BENCH_BATCH_FIELD": load.batch_field,
        "BENCH_COUNT": str(count),
        "BENCH_THREADS": str(load.threads),
        "BENCH_RATE": str(load.rate),
        "BENCH_RECORD": str(record) if record else "",
    }


async def _start(
    url: str, load: Load, duration: str, env: dict[str, str]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        ensure_wrk(),
        *("-t", str(load.threads), "-c", str(load.connections), "-d", duration),
        *("--timeout", "30s", "-s", str(SCRIPT), url),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def run_for(base_url: str, load: Load, seconds: float) -> WrkResult:
    """Send for ``seconds``, as fast as answers come (or at ``load.rate``)."""
    process = await _start(
        base_url + load.path, load, f"{max(1, round(seconds))}s", _environment(load, 0, None)
    )
    output, _ = await process.communicate()
    return _result(_parse(output.decode("utf-8", "replace")), None, [])


class RecordReader:
    """Reads the per-thread files of a count run as they grow."""

    def __init__(self, folder: Path, threads: int) -> None:
        self.folder = folder
        self.threads = threads
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, str] = {}
        self.records: list[Accepted] = []
        self.done = 0

    def read(self) -> None:
        for path in sorted(self.folder.glob("thread-*.txt")):
            with path.open() as handle:
                handle.seek(self._offsets.get(path, 0))
                chunk = self._partial.pop(path, "") + handle.read()
                self._offsets[path] = handle.tell()
            lines = chunk.split("\n")
            if lines[-1]:
                self._partial[path] = lines[-1]
            for line in lines[:-1]:
                if line == "#done":
                    self.done += 1
                elif line:
                    nid, rid, sent, answered = line.split(" ")
                    self.records.append(Accepted(nid, rid, float(sent), float(answered)))

    @property
    def complete(self) -> bool:
        return self.done >= self.threads


async def run_count(
    base_url: str,
    load: Load,
    count: int,
    record: Path,
    *,
    stall_seconds: float,
    on_progress: Callable[[int], None] | None = None,
) -> WrkResult:
    """Send exactly ``count`` unique notifications; returns once every one was answered."""
    load = _fit(load, count)
    await asyncio.to_thread(record.mkdir, parents=True, exist_ok=True)
    process = await _start(
        base_url + load.path, load, COUNT_RUN_LIMIT, _environment(load, count, record)
    )
    reader = RecordReader(record, load.threads)
    loop = asyncio.get_running_loop()
    last_change, seen = loop.time(), -1
    while not reader.complete:
        await asyncio.sleep(0.25)
        reader.read()
        if on_progress is not None:
            on_progress(len(reader.records))
        if len(reader.records) != seen:
            last_change, seen = loop.time(), len(reader.records)
        if process.returncode is not None or loop.time() - last_change > stall_seconds:
            if process.returncode is None:
                process.kill()
            said = (await process.communicate())[0].decode("utf-8", "replace")
            raise BenchFailure(
                f"wrk stalled or stopped after {seen} of {count} accepted:\n{said[-2000:]}"
            )
    stat = read_stat(process.pid)  # its threads have stopped; what it used is all there
    process.send_signal(signal.SIGINT)  # wakes wrk's main thread, which prints the summary
    output, _ = await process.communicate()
    cpu = stat.cpu_seconds if stat is not None else None
    result = _result(_parse(output.decode("utf-8", "replace")), cpu, [])
    result.records = reader.records
    return result


def _fit(load: Load, count: int) -> Load:
    """No more threads or connections than notifications (each thread sends its share)."""
    threads = max(1, min(load.threads, count))
    connections = max(threads, min(load.connections, count))
    if (threads, connections) == (load.threads, load.connections):
        return load
    return Load(**{**load.__dict__, "threads": threads, "connections": connections})
