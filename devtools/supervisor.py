"""Keep ``make run``'s processes running: restart one that dies, with exponential backoff.

A supervised process that exits is started again after 1 s, then 2 s, 4 s ... at most 30 s while
it keeps dying; once it has stayed up ``reset_after`` seconds, its next crash waits 1 s again. Each
death, restart and return to readiness is reported in one line; the other processes are left
alone. ``poll()`` never blocks on a pending restart, so the launcher's loop (which calls it) still
answers Ctrl-C at once.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Popen = subprocess.Popen[Any]


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 30.0
    """Seconds up after which a process counts as healthy again (its crash streak is forgotten)."""

    def delay(self, crashes_in_a_row: int) -> float:
        """Seconds to wait before restarting after the ``crashes_in_a_row``-th crash (from 1)."""
        return float(min(self.cap, self.initial * self.factor ** (crashes_in_a_row - 1)))


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``exit code -9, killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"exit code {returncode}, killed by {signal.Signals(-returncode).name}"
        except ValueError:
            pass
    return f"exit code {returncode}"


@dataclass
class _Child:
    name: str
    start: Callable[[], Popen]
    process: Popen
    started_at: float
    ready: Callable[[], bool] | None
    log: str | None
    crashes_in_a_row: int = 0
    restart_at: float | None = None
    awaiting_ready: bool = False


class Supervisor:
    """Restarts the processes it watches when they die; call ``poll()`` a few times a second."""

    def __init__(
        self,
        backoff: Backoff | None = None,
        *,
        report: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = backoff or Backoff()
        self._report = report
        self._clock = clock
        self._children: dict[str, _Child] = {}

    def add(
        self,
        name: str,
        start: Callable[[], Popen],
        *,
        process: Popen | None = None,
        ready: Callable[[], bool] | None = None,
        log: str | None = None,
    ) -> Popen:
        """Watch ``name``; ``start()`` starts it (now, unless ``process`` is already running).

        ``ready()`` (optional, should return quickly) says whether a restarted process serves
        again; ``log`` is where its output goes, named in the report when it dies.
        """
        running = process if process is not None else start()
        self._children[name] = _Child(name, start, running, self._clock(), ready, log)
        return running

    def process(self, name: str) -> Popen:
        """The current process of ``name`` (a new one after each restart)."""
        return self._children[name].process

    def stop_all(self, timeout: float = 20.0) -> None:
        """Cancel pending restarts; SIGTERM every process (last added first), SIGKILL stragglers."""
        running = [c.process for c in reversed(self._children.values()) if c.process.poll() is None]
        self._children.clear()
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = self._clock() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - self._clock()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def poll(self) -> None:
        """Notice deaths, schedule restarts, perform the ones that are due; never waits."""
        now = self._clock()
        for child in self._children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child, now)
                continue
            returncode = child.process.poll()
            if returncode is None:
                if child.awaiting_ready and child.ready is not None and child.ready():
                    child.awaiting_ready = False
                    self._report(
                        f"{child.name} is ready again, {now - child.started_at:.1f} s after "
                        "its restart"
                    )
                continue
            delay = self._schedule_restart(child, now)
            where = f" Its log: {child.log}" if child.log else ""
            self._report(
                f"{child.name} died ({describe_exit(returncode)}); restarting it in {delay:g} s "
                f"(crash {child.crashes_in_a_row} in a row). "
                f"The other processes keep running.{where}"
            )

    def _schedule_restart(self, child: _Child, now: float) -> float:
        if now - child.started_at >= self.backoff.reset_after:
            child.crashes_in_a_row = 0
        child.crashes_in_a_row += 1
        delay = self.backoff.delay(child.crashes_in_a_row)
        child.restart_at = now + delay
        return delay

    def _restart(self, child: _Child, now: float) -> None:
        child.restart_at = None
        child.started_at = now
        try:
            child.process = child.start()
        except Exception as exc:  # cannot even start it: report and back off like a crash
            delay = self._schedule_restart(child, now)
            self._report(f"could not restart {child.name} ({exc}); trying again in {delay:g} s")
            return
        child.awaiting_ready = child.ready is not None
        self._report(f"{child.name} restarted (pid {child.process.pid})")
