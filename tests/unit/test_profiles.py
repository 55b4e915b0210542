"""make profile's grouping of py-spy samples into the parts docs/benchmarks.md quotes."""

from __future__ import annotations

import os
import threading

import pytest

from benchmarks.procstat import run_times
from benchmarks.profiles import OTHER, WAITING_FOR_A_CPU, shares, table, waiting_share

pytestmark = pytest.mark.unit

FRAMEWORK = "HTTP server and framework (uvicorn, Starlette, FastAPI, our middleware)"
RAW = [
    # the recorder owns its Redis calls: the part that owns a stack wins over its innermost frame
    "run (uvicorn/main.py:1);HistoryRecorder._run (gateway/history.py:1);"
    "Redis.execute_command (redis/asyncio/client.py:1) 30",
    # otherwise the innermost frame decides: our endpoint's Redis call is a Redis call
    "run (uvicorn/main.py:1);Starlette.__call__ (starlette/applications.py:1);"
    "submit (gateway/intake.py:1);AutoPipelineRedis._send (libs/storage/redis.py:1) 50",
    "run (uvicorn/main.py:1);Starlette.__call__ (starlette/applications.py:1) 15",
    "Runner.run (asyncio/runners.py:118) 5",
    "not a profile line",
]


def test_samples_are_grouped_by_the_part_that_owns_or_ends_their_stack():
    assert shares(RAW) == {
        "Redis calls": 50.0,
        "history recorder (Redis stream to PostgreSQL)": 30.0,
        FRAMEWORK: 15.0,
        OTHER: 5.0,
    }


def test_an_idle_pool_thread_waiting_for_work_is_not_counted():
    waiting = (
        "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);"
        "_worker (concurrent/futures/thread.py:81) 100"
    )
    working = (
        "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:83);"
        "_WorkItem.run (concurrent/futures/thread.py:58);render_sync (template_service/x.py:1) 10"
    )
    assert shares([*RAW, waiting, working]) == {
        "Redis calls": 45.5,
        "history recorder (Redis stream to PostgreSQL)": 27.3,
        FRAMEWORK: 13.6,
        "render (Jinja sandbox)": 9.1,
        OTHER: 4.5,
    }


def test_the_table_has_a_column_per_profile_and_a_row_per_part_seen():
    rendered = table({"single: gateway": shares(RAW), "empty": {}})
    lines = rendered.splitlines()
    assert lines[0] == "| share of samples | single: gateway | empty |"
    assert "| Redis calls | 50 % |  |" in lines
    assert not any(line.startswith("| JWT verification") for line in lines)


def test_the_share_waiting_for_a_cpu_comes_from_the_scheduler():
    before = {1: (10.0, 2.0), 2: (5.0, 0.0)}
    after = {1: (16.0, 5.0), 2: (6.0, 1.0)}  # 7 s ran, 4 s waited: 36.4 % of the runnable time
    assert waiting_share(before, after) == 36.4
    assert waiting_share(before, {}) == 0.0  # the processes are gone
    mine = run_times(os.getpid())
    assert mine[threading.get_native_id()][0] > 0  # this thread has run
    assert all(waited >= 0 for _, waited in mine.values())
    assert run_times(2**22 + 1) == {}  # above Linux's largest pid: no such process


def test_the_waiting_share_is_the_table_s_last_row():
    lines = table({"single: gateway": shares(RAW) | {WAITING_FOR_A_CPU: 41.0}}).splitlines()
    assert lines[-1] == f"| {WAITING_FOR_A_CPU} | 41 % |"
