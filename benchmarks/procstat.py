"""CPU time and resident memory of groups of processes, read from ``/proc``.

A group is a service (its process and every descendant: uvicorn's worker processes), a stand-in,
or a server found by its command name (Redis, RabbitMQ, PostgreSQL: shared with whoever else uses
this machine, so their CPU includes other users' work; the report says so).

CPU is ``utime + stime`` of ``/proc/<pid>/stat`` (the whole thread group), in seconds; resident
memory is ``VmRSS`` of ``/proc/<pid>/status``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class Stat:
    pid: int
    ppid: int
    comm: str
    cpu_seconds: float


def read_stat(pid: int) -> Stat | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ..." where comm may hold spaces and parentheses
    comm = text[text.index("(") + 1 : text.rindex(")")]
    rest = text[text.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return Stat(pid, int(rest[1]), comm, (utime + stime) / TICKS)


def run_times(pid: int) -> dict[int, tuple[float, float]]:
    """By thread: seconds it ran on a CPU and waited, runnable, for one (the scheduler's
    ``/proc/<pid>/task/<tid>/schedstat``); empty for a process that is gone. Per thread, so that a
    thread ending between two readings does not take its past out of a difference."""
    times = {}
    with suppress(OSError):
        for task in (PROC / str(pid) / "task").iterdir():
            with suppress(OSError, ValueError, IndexError):
                fields = (task / "schedstat").read_text().split()
                times[int(task.name)] = (int(fields[0]) / 1e9, int(fields[1]) / 1e9)
    return times


def rss_bytes(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class MachineCpu:
    """The whole machine's CPU seconds so far (``/proc/stat``, summed over its CPUs): busy
    (user, nice, system, irq, softirq, steal) and idle (idle, iowait)."""

    busy: float
    idle: float

    def since(self, before: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy - before.busy, self.idle - before.idle)

    @property
    def busy_share(self) -> float:
        """The share of the machine's CPU time that was busy (0 to 1)."""
        total = self.busy + self.idle
        return self.busy / total if total > 0 else 0.0


def machine_cpu() -> MachineCpu:
    fields = (PROC / "stat").read_text().splitlines()[0].split()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return MachineCpu(
        (user + nice + system + irq + softirq + steal) / TICKS, (idle + iowait) / TICKS
    )


def all_stats() -> dict[int, Stat]:
    stats = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def with_descendants(roots: Iterable[int], stats: dict[int, Stat]) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    members: set[int] = set()
    pending = [pid for pid in roots if pid in stats]
    while pending:
        pid = pending.pop()
        if pid not in members:
            members.add(pid)
            pending.extend(children.get(pid, ()))
    return members


@dataclass(frozen=True)
class Group:
    name: str
    roots: Callable[[dict[int, Stat]], Iterable[int]]
    shared: bool = False
    """A server others use too: its CPU and memory are not ours alone."""
    ours: bool = False
    """One of Herald's own services (counted in "our processes")."""
    with_children: bool = True


def by_pids(name: str, pids: Callable[[], Iterable[int | None]], *, ours: bool = False) -> Group:
    return Group(name, lambda _stats: [p for p in pids() if p is not None], ours=ours)


def by_command(name: str, *commands: str) -> Group:
    """Every process whose command name is one of ``commands`` (a shared server)."""
    return Group(
        name, lambda stats: [s.pid for s in stats.values() if s.comm in commands], shared=True
    )


class ProcStat:
    def __init__(self, groups: Iterable[Group]) -> None:
        self.groups = list(groups)

    def members(self) -> Iterator[tuple[Group, dict[int, Stat], set[int]]]:
        stats = all_stats()
        for group in self.groups:
            roots = group.roots(stats)
            if group.with_children:
                yield group, stats, with_descendants(roots, stats)
            else:
                yield group, stats, {pid for pid in roots if pid in stats}

    def cpu(self) -> dict[str, float]:
        """CPU seconds each group has used so far (its processes alive now)."""
        return {
            group.name: sum(stats[pid].cpu_seconds for pid in pids)
            for group, stats, pids in self.members()
        }

    def rss(self) -> dict[str, int]:
        return {
            group.name: sum(rss_bytes(pid) for pid in pids) for group, _, pids in self.members()
        }

    def processes(self) -> dict[str, int]:
        return {group.name: len(pids) for group, _, pids in self.members()}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Seconds used between two readings (never negative: a restarted process starts again)."""
    return {name: max(0.0, after.get(name, 0.0) - before.get(name, 0.0)) for name in after}


@asynccontextmanager
async def rss_peaks(stat: ProcStat, every: float = 1.0) -> AsyncIterator[dict[str, int]]:
    """The highest resident memory of each group, sampled while the block runs."""
    peaks: dict[str, int] = {}

    def sample() -> None:
        for name, value in stat.rss().items():
            peaks[name] = max(peaks.get(name, 0), value)

    async def sampler() -> None:
        while True:
            await asyncio.to_thread(sample)
            await asyncio.sleep(every)

    task = asyncio.create_task(sampler())
    try:
        yield peaks
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        sample()
