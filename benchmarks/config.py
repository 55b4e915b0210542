"""What a benchmark run does, from ``BENCH_*`` environment variables (``make bench`` passes them).

``BENCH_QUICK=1`` presets a short run (one round of 3 s, 500 notifications end to end); any other
variable set beside it wins. Every option, its default and its meaning is in ``OPTIONS``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("intake", "ceilings", "e2e", "campaign")

# name: (default, quick default, meaning)
OPTIONS: dict[str, tuple[str, str, str]] = {
    "BENCH_PHASES": (",".join(PHASES), ",".join(PHASES), "phases to run"),
    "BENCH_ROUNDS": ("3", "1", "rounds of every fixed-duration measurement (medians reported)"),
    "BENCH_DURATION": ("10", "3", "seconds of each fixed-duration measurement"),
    "BENCH_WORKERS": ("1,2", "1,2", "worker counts of the gateway and the minimal endpoint"),
    "BENCH_CONNECTIONS": ("10,50", "10,50", "connections (requests in flight) for intake"),
    "BENCH_BATCH_SIZE": ("1000", "1000", "notifications per batch request"),
    "BENCH_BATCH_CONNECTIONS": ("4,8", "4,8", "batch requests in flight (bulk intake)"),
    "BENCH_E2E_COUNT": ("10000", "500", "notifications end to end, email and push"),
    "BENCH_E2E_SMALL": ("2000", "200", "a smaller email run, once a round (0: none)"),
    "BENCH_E2E_CONNECTIONS": ("50", "50", "requests in flight end to end"),
    "BENCH_CAMPAIGN_COUNT": ("20000", "1000", "notifications of each campaign run (0: none)"),
    "BENCH_CAMPAIGN_CONNECTIONS": ("2", "2", "batch requests in flight in a campaign"),
    "BENCH_PACED_RATE": ("175", "175", "requests/s of the paced email run (latency)"),
    "BENCH_PACED_COUNT": ("2000", "200", "notifications of the paced email run (0: none)"),
    "BENCH_SMTP_CONNECTIONS": ("10", "10", "pooled connections of the SMTP ceiling"),
    "BENCH_FCM_CONCURRENCY": ("50", "50", "requests in flight of the FCM ceiling"),
    "BENCH_USERS": ("10", "10", "users the notifications are spread over"),
    "BENCH_WRK_THREADS": ("2", "2", "wrk threads"),
    "BENCH_IDLE_SECONDS": ("5", "2", "the idle window (idle CPU and resident memory)"),
    "BENCH_STALL_SECONDS": ("60", "60", "fail when nothing progresses this long"),
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class BenchConfig:
    phases: tuple[str, ...]
    rounds: int
    duration: float
    workers: tuple[int, ...]
    connections: tuple[int, ...]
    batch_size: int
    batch_connections: tuple[int, ...]
    e2e_count: int
    e2e_small: int
    e2e_connections: int
    campaign_count: int
    campaign_connections: int
    paced_rate: float
    paced_count: int
    smtp_connections: int
    fcm_concurrency: int
    users: int
    wrk_threads: int
    idle_seconds: float
    stall_seconds: float
    results_dir: Path = ROOT / "benchmarks" / "results"
    doc: Path = ROOT / "docs" / "benchmarks.md"
    command: str = "make bench"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BenchConfig:
        env = os.environ if env is None else env
        quick = env.get("BENCH_QUICK", "") not in ("", "0")
        value = {name: env.get(name) or (q if quick else d) for name, (d, q, _) in OPTIONS.items()}
        phases = tuple(p.strip() for p in value["BENCH_PHASES"].split(",") if p.strip())
        unknown = set(phases) - set(PHASES)
        if unknown:
            raise ValueError(f"BENCH_PHASES: unknown {sorted(unknown)}; choose from {PHASES}")
        given = [f"{n}={env[n]}" for n in ["BENCH_QUICK", *OPTIONS] if env.get(n)]
        return cls(
            phases=phases,
            rounds=int(value["BENCH_ROUNDS"]),
            duration=float(value["BENCH_DURATION"]),
            workers=_ints(value["BENCH_WORKERS"]),
            connections=_ints(value["BENCH_CONNECTIONS"]),
            batch_size=int(value["BENCH_BATCH_SIZE"]),
            batch_connections=_ints(value["BENCH_BATCH_CONNECTIONS"]),
            e2e_count=int(value["BENCH_E2E_COUNT"]),
            e2e_small=int(value["BENCH_E2E_SMALL"]),
            e2e_connections=int(value["BENCH_E2E_CONNECTIONS"]),
            campaign_count=int(value["BENCH_CAMPAIGN_COUNT"]),
            campaign_connections=int(value["BENCH_CAMPAIGN_CONNECTIONS"]),
            paced_rate=float(value["BENCH_PACED_RATE"]),
            paced_count=int(value["BENCH_PACED_COUNT"]),
            smtp_connections=int(value["BENCH_SMTP_CONNECTIONS"]),
            fcm_concurrency=int(value["BENCH_FCM_CONCURRENCY"]),
            users=int(value["BENCH_USERS"]),
            wrk_threads=int(value["BENCH_WRK_THREADS"]),
            idle_seconds=float(value["BENCH_IDLE_SECONDS"]),
            stall_seconds=float(value["BENCH_STALL_SECONDS"]),
            command=" ".join([*given, "make bench"]),
        )

    def settings(self) -> dict[str, object]:
        """The options as JSON (for the results)."""
        skip = {"results_dir", "doc", "command"}
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
            if f.name not in skip
        }


class BenchFailure(Exception):
    """The run cannot be trusted (a notification lost or duplicated, a run that stalled)."""


def run_until_stopped(main: Callable[[], Coroutine[Any, Any, int]], name: str) -> NoReturn:
    """Run ``main`` on uvloop (the services' loop) and exit with its code. SIGTERM or Ctrl-C
    cancels it, so the services, the stand-ins and wrk are stopped on the way out instead of
    being left running."""
    import uvloop

    async def cancellable() -> int:
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
        return await main()

    try:
        sys.exit(uvloop.run(cancellable()))
    except asyncio.CancelledError:
        print(f"{name}: stopped; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)


class Progress:
    """One line per phase, round and measurement, with the time since the run started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", flush=True)
