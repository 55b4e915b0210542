"""The supervisor restarts a process that dies, with backoff, and leaves the others alone."""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from devtools.supervisor import Backoff, Supervisor, describe_exit

pytestmark = pytest.mark.unit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def start_sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(SLEEPER)


@contextmanager
def supervised(backoff: Backoff) -> Iterator[tuple[Supervisor, list[str]]]:
    reports: list[str] = []
    supervisor = Supervisor(backoff, report=reports.append)
    try:
        yield supervisor, reports
    finally:
        supervisor.stop_all(timeout=5)


def poll_until(supervisor: Supervisor, condition: Callable[[], bool], timeout: float) -> float:
    """Poll the supervisor every 20 ms until ``condition()``; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not reached"
        supervisor.poll()
        time.sleep(0.02)
    return time.monotonic() - started


def kill_and_time_restart(supervisor: Supervisor, name: str, timeout: float = 5.0) -> float:
    old = supervisor.process(name)
    old.send_signal(signal.SIGKILL)
    old.wait(5)
    return poll_until(supervisor, lambda: supervisor.process(name).pid != old.pid, timeout)


def test_backoff_doubles_up_to_the_cap():
    backoff = Backoff(initial=1, factor=2, cap=30)
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_exit_descriptions_name_the_signal():
    assert describe_exit(-signal.SIGKILL) == "exit code -9, killed by SIGKILL"
    assert describe_exit(3) == "exit code 3"


def test_a_killed_process_is_restarted_with_growing_delays_and_the_others_keep_running():
    backoff = Backoff(initial=0.3, factor=2, cap=0.6, reset_after=60)
    with supervised(backoff) as (supervisor, reports):
        supervisor.add("victim", start_sleeper)
        bystander = supervisor.add("bystander", start_sleeper)

        delays = [kill_and_time_restart(supervisor, "victim") for _ in range(3)]

        # 0.3 s, then 0.6 s, then the cap (0.6 s); polling adds at most a few tens of ms
        assert 0.3 <= delays[0] < 0.6, delays
        assert 0.6 <= delays[1] < 1.0, delays
        assert 0.6 <= delays[2] < 1.0, delays
        died = [line for line in reports if " died " in line]
        assert len(died) == 3
        assert all(
            line.startswith("victim died (exit code -9, killed by SIGKILL)") for line in died
        )
        assert [re.findall(r"restarting it in (\S+) s", line) for line in died] == [
            ["0.3"],
            ["0.6"],
            ["0.6"],
        ]
        assert "The other processes keep running." in died[0]
        assert sum(line.startswith("victim restarted (pid ") for line in reports) == 3
        assert supervisor.process("victim").poll() is None
        assert supervisor.process("bystander") is bystander
        assert bystander.poll() is None
        assert not any(line.startswith("bystander") for line in reports)


def test_a_process_that_stayed_up_long_enough_starts_again_from_the_first_delay():
    backoff = Backoff(initial=0.2, factor=4, cap=5, reset_after=0.5)
    with supervised(backoff) as (supervisor, reports):
        supervisor.add("flaky", start_sleeper)
        first = kill_and_time_restart(supervisor, "flaky")
        second = kill_and_time_restart(supervisor, "flaky")  # at once: 0.8 s
        time.sleep(0.6)  # up longer than reset_after
        third = kill_and_time_restart(supervisor, "flaky")
        assert 0.2 <= first < 0.7
        assert 0.8 <= second < 1.3
        assert 0.2 <= third < 0.7
        assert [line.split("(crash ")[1][:1] for line in reports if " died " in line] == [
            "1",
            "2",
            "1",
        ]


def test_a_process_that_keeps_exiting_is_reported_with_its_exit_code_and_its_log():
    def start_failing() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    backoff = Backoff(initial=0.1, factor=2, cap=0.2, reset_after=60)
    with supervised(backoff) as (supervisor, reports):
        supervisor.add("broken", start_failing, log=".run/logs/broken.log")
        poll_until(supervisor, lambda: sum(" died " in line for line in reports) >= 3, 10)
        died = [line for line in reports if " died " in line]
        assert all(line.startswith("broken died (exit code 3); restarting it in ") for line in died)
        assert all(line.endswith("Its log: .run/logs/broken.log") for line in died)
        assert "restarting it in 0.2 s (crash 3 in a row)" in died[2]


def test_readiness_after_a_restart_is_reported_once():
    answers = iter([False, False, True])
    backoff = Backoff(initial=0.1, reset_after=60)
    with supervised(backoff) as (supervisor, reports):
        supervisor.add("server", start_sleeper, ready=lambda: next(answers))
        kill_and_time_restart(supervisor, "server")
        poll_until(supervisor, lambda: any("ready again" in line for line in reports), 5)
        for _ in range(5):
            supervisor.poll()
        assert sum("server is ready again" in line for line in reports) == 1
        assert reports.index(next(r for r in reports if "ready again" in r)) > reports.index(
            next(r for r in reports if "restarted" in r)
        )


def test_a_start_that_fails_is_retried_with_backoff():
    attempts: list[float] = []

    def start_flaky() -> subprocess.Popen[bytes]:
        attempts.append(time.monotonic())
        if len(attempts) in (2, 3):  # the first two restarts cannot even start
            raise OSError("no such file")
        return start_sleeper()

    backoff = Backoff(initial=0.1, factor=2, cap=1, reset_after=60)
    with supervised(backoff) as (supervisor, reports):
        supervisor.add("fragile", start_flaky)
        kill_and_time_restart(supervisor, "fragile", timeout=5)
        assert len(attempts) == 4
        restarts = attempts[1:]  # the first two failed at once, then the third started
        gaps = [later - earlier for earlier, later in itertools.pairwise(restarts)]
        assert gaps[0] >= 0.2, gaps
        assert gaps[1] >= 0.4, gaps
        assert [line for line in reports if line.startswith("could not restart")] == [
            "could not restart fragile (no such file); trying again in 0.2 s",
            "could not restart fragile (no such file); trying again in 0.4 s",
        ]


def test_stop_all_ends_every_process_and_cancels_pending_restarts():
    with supervised(Backoff(initial=0.2)) as (supervisor, reports):
        first = supervisor.add("first", start_sleeper)
        second = supervisor.add("second", start_sleeper)
        second.kill()
        second.wait(5)
        supervisor.poll()  # second's restart is now pending
        assert any(line.startswith("second died") for line in reports)
        supervisor.stop_all(timeout=5)
        assert first.returncode == -signal.SIGTERM
        time.sleep(0.3)
        supervisor.poll()
        assert not any("restarted" in line for line in reports)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_report_names_the_signal_that_ended_it(signum):
    with supervised(Backoff(initial=0.1)) as (supervisor, reports):
        supervisor.add("target", start_sleeper).send_signal(signum)
        poll_until(supervisor, lambda: bool(reports), 5)
        assert f"killed by {signal.Signals(signum).name}" in reports[0]
