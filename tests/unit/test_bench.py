"""The benchmark's own arithmetic and parsing: options, percentiles, records, figures, the page."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx
import pytest
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings

from benchmarks import report
from benchmarks.campaign import Sender, notification
from benchmarks.ceilings import _for_a_while
from benchmarks.config import BenchConfig, BenchFailure
from benchmarks.e2e import Arrivals
from benchmarks.intake import batch_in_openapi, workers_setting
from benchmarks.procstat import MachineCpu, ProcStat, by_pids, cpu_delta, machine_cpu, read_stat
from benchmarks.stats import distribution_ms, median_of, percentile
from benchmarks.wrk import RecordReader

pytestmark = pytest.mark.unit


def test_options_default_quick_and_given():
    full = BenchConfig.from_env({})
    assert (full.rounds, full.duration, full.e2e_count) == (3, 10.0, 10_000)
    assert full.workers == (1, 2)
    assert full.connections == (10, 50)
    assert full.command == "make bench"
    quick = BenchConfig.from_env({"BENCH_QUICK": "1", "BENCH_E2E_COUNT": "700"})
    assert (quick.rounds, quick.duration, quick.e2e_count) == (1, 3.0, 700)
    assert quick.command == "BENCH_QUICK=1 BENCH_E2E_COUNT=700 make bench"
    with pytest.raises(ValueError, match="BENCH_PHASES"):
        BenchConfig.from_env({"BENCH_PHASES": "intake,warp"})


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50,
        99,
        100,
    )
    assert percentile([], 99) == 0.0
    assert distribution_ms([0.010, 0.020, 0.030]) == {
        "p50": 20.0,
        "p95": 30.0,
        "p99": 30.0,
        "max": 30.0,
    }
    rounds = [{"a": {"b": 1}}, {"a": {"b": 5}}, {"a": {"b": 3}}]
    assert median_of(rounds, "a.b")["a_b"] == 3


def test_wrk_records_are_read_as_they_grow(tmp_path):
    first = tmp_path / "thread-1.txt"
    first.write_text("n1 r1 10.0 10.5\nn2 r2 11.0 1")
    reader = RecordReader(tmp_path, threads=2)
    reader.read()
    assert [r.notification_id for r in reader.records] == ["n1"]
    with first.open("a") as f:
        f.write("1.5\n#done\n")
    (tmp_path / "thread-2.txt").write_text("n3 r3 12.0 12.25\n#done\n")
    reader.read()
    assert [(r.notification_id, r.answered_at) for r in reader.records] == [
        ("n1", 10.5),
        ("n2", 11.5),
        ("n3", 12.25),
    ]
    assert reader.complete


def test_arrivals_skip_earlier_lines_and_keep_every_arrival(tmp_path):
    record = tmp_path / "sink.jsonl"
    record.write_text(json.dumps({"notification_id": "old", "received_at": 1.0}) + "\n")
    arrivals = Arrivals(record)
    with record.open("a") as f:
        f.write(json.dumps({"notification_id": "a", "received_at": 2.0}) + "\n")
        f.write(json.dumps({"notification_id": "a", "received_at": 3.0}) + "\n")
        f.write('{"notification_id": "b", "rece')
    arrivals.read()
    assert dict(arrivals.times) == {"a": [2.0, 3.0]}
    with record.open("a") as f:
        f.write('ived_at": 4.0}\n')
    arrivals.read()
    assert arrivals.times["b"] == [4.0]
    assert len(arrivals) == 3


def test_the_batch_endpoint_and_its_body_come_from_openapi():
    assert batch_in_openapi({"paths": {"/api/v1/notifications/": {"post": {}}}}) is None
    listed = {"content": {"application/json": {"schema": {"type": "array"}}}}
    spec: dict[str, Any] = {"paths": {"/api/v1/notifications/batch": {"post": {}}}}
    spec["paths"]["/api/v1/notifications/batch"]["post"]["requestBody"] = listed
    assert batch_in_openapi(spec) == ("/api/v1/notifications/batch", "")
    wrapped = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/B"}}}}
    spec["paths"]["/api/v1/notifications/batch"]["post"]["requestBody"] = wrapped
    spec["components"] = {
        "schemas": {"B": {"properties": {"mode": {"type": "string"}, "items": {"type": "array"}}}}
    }
    assert batch_in_openapi(spec) == ("/api/v1/notifications/batch", "items")


def test_the_workers_setting_is_found_by_name():
    class Without(BaseSettings):
        port: int = 1

    class With(BaseSettings):
        gateway_workers: int = Field(1, validation_alias=AliasChoices("GATEWAY_WORKERS", "W"))

    class Plain(BaseSettings):
        workers: int = 1

    assert workers_setting(Without) == []
    assert workers_setting(With) == ["GATEWAY_WORKERS", "W"]
    assert workers_setting(Plain) == ["WORKERS"]


def test_cpu_of_this_process_from_proc():
    stat = read_stat(os.getpid())
    assert stat is not None
    assert stat.ppid == os.getppid()
    group = by_pids("me", lambda: [os.getpid(), None])
    procstat = ProcStat([group])
    before = procstat.cpu()
    sum(i * i for i in range(300_000))
    assert cpu_delta(before, procstat.cpu())["me"] >= 0
    assert procstat.rss()["me"] > 0
    assert cpu_delta({"x": 5.0}, {"x": 1.0}) == {"x": 0.0}  # a restarted process


def test_the_machines_cpu_from_proc_stat():
    before = machine_cpu()
    until = time.monotonic() + 0.1  # busy for ten of the kernel's ticks, however fast the CPU
    while time.monotonic() < until:
        sum(i * i for i in range(10_000))
    used = machine_cpu().since(before)
    assert used.busy > 0
    assert used.idle >= 0
    assert 0 < used.busy_share <= 1
    assert MachineCpu(busy=1.5, idle=0.5).busy_share == 0.75
    assert MachineCpu(busy=0, idle=0).busy_share == 0


def test_a_batch_figure_says_how_busy_the_machine_was_and_where_its_cpu_went():
    result = _result()
    result["intake"]["batch"]["w1.c4"] = {
        "per_second": 8000.0,
        "latency_ms_p99": 600.0,
        "cpu_ms_per_notification": 0.07,
        "rabbitmq_cpu_ms_per_notification": 0.07,
        "redis_cpu_ms_per_notification": 0.03,
        "postgresql_cpu_ms_per_notification": 0.03,
        "machine_cpu_ms_per_notification": 0.22,
        "machine_busy": 0.88,
        "at_full_use_per_second": 9091,
    }
    batch = {f.key: f for f in report.figures(result)}["intake.batch.w1.c4"]
    assert (batch.value, batch.met) == (8000.0, False)
    assert batch.note == (
        "machine 88% busy, 0.22 ms CPU per notification (gateway 0.07, RabbitMQ 0.07, "
        "Redis 0.03, PostgreSQL 0.03); at full use: 9,091/s"
    )
    page = report.figures_table(report.complete(result))  # under the table, by the figure's label
    assert f"- {batch.label}: machine 88% busy" in page
    del result["intake"]["batch"]["w1.c4"]["machine_busy"]  # a run from before the machine was read
    assert {f.key: f for f in report.figures(result)}["intake.batch.w1.c4"].note is None


def _run(rate: float, p99: float, *, lost: int = 0) -> dict[str, Any]:
    return {
        "ok": not lost,
        "requested": 100,
        "refused": 0,
        "accepted": 100,
        "delivered": 100 - lost,
        "lost": lost,
        "duplicated": 0,
        "delivered_per_second": rate,
        "accepted_per_second": rate,
        "request_to_delivery_ms": {"p50": 1.0, "p95": 2.0, "p99": p99, "max": p99},
        "requests": {},
        "cpu_ms_per_notification": {"gateway": 1.0, "email_service": 2.0},
        "cpu_ms_per_notification_ours": 3.0,
        "rss_mb_peak": {"gateway": 100.0},
    }


def _result(**e2e: Any) -> dict[str, Any]:
    config = BenchConfig.from_env({"BENCH_WORKERS": "1", "BENCH_CONNECTIONS": "10,50"})
    intake = {
        "notes": {"batch": "the gateway has no POST /api/v1/notifications/batch"},
        "minimal": {
            "w1.c10": {"per_second": 2000.0, "latency_ms_p99": 10.0},
            "w1.c50": {"per_second": 2500.0, "latency_ms_p99": 30.0},
        },
        "gateway": {
            "w1.c10": {"per_second": 500.0, "latency_ms_p99": 40.0},
            "w1.c50": {"per_second": 2250.0, "latency_ms_p99": 90.0},
        },
        "batch": {},
    }
    ceilings = {
        "smtp_prebuilt": {"per_second": 1750.0},
        "smtp_build_each": {"per_second": 875.0},
        "fcm_aiohttp": {"per_second": 1000.0},
        "fcm_httpx": {"per_second": 250.0},
        "fcm": {"per_second": 1000.0, "client": "aiohttp"},
    }
    return {
        "settings": config.settings(),
        "intake": intake,
        "ceilings": ceilings,
        "e2e": {"email": _run(400.0, 800.0), "push": _run(850.0, 200.0)} | e2e,
    }


def test_figures_are_ratios_to_ceilings_of_the_same_run():
    figures = {f.key: f for f in report.figures(_result())}
    gateway = figures["intake.gateway.w1.c50"]
    assert (gateway.ratio, gateway.met) == (0.9, True)
    assert figures["intake.gateway.w1.c10"].met is True  # p99 40 ms < 50 ms
    assert figures["ceiling.smtp.build_each"].ratio == 0.5
    email = figures["e2e.email"]
    assert (email.ceiling, email.ratio, email.met) == (1750.0, 0.229, True)
    assert figures["e2e.push"].ratio == 0.85
    batch = figures["intake.batch.w1.c4"]
    assert batch.value is None
    assert "no POST /api/v1/notifications/batch" in (batch.note or "")
    assert figures["ceiling.fcm.httpx"].ratio == 0.25  # the push ratio is to the faster client
    assert "aiohttp" in figures["ceiling.fcm"].label
    assert figures["cpu.email.ours"].met is True


def _campaign_run(rate: float, *, duplicated: int = 0) -> dict[str, Any]:
    run = _run(rate, 5000.0) | {"campaign_size": 100_000, "batch_size": 1000, "connections": 2}
    run["minutes_per_campaign"] = round(100_000 / rate / 60, 1)
    run["duplicated"], run["ok"] = duplicated, not duplicated
    late = {"p50": 150.0, "p95": 190.0, "p99": 200.0, "max": 200.0}
    run["urgent"] = {"count": 20, "priority": 10, "delivered": 20, "request_to_delivery_ms": late}
    return run


def test_a_campaign_is_minutes_for_100k_and_ratios_to_the_ceilings():
    result = _result() | {"campaign": {"email": _campaign_run(350.0), "push": _campaign_run(700.0)}}
    figures = {f.key: f for f in report.figures(result)}
    email, push = figures["campaign.email"], figures["campaign.push"]
    assert (email.value, email.ceiling, email.ratio, email.met) == (350.0, 1750.0, 0.2, True)
    assert email.note == "100,000 in 4.8 min"
    assert (push.ratio, push.met) == (0.7, False)  # to the faster client's 1,000/s
    assert push.note == "100,000 in 2.4 min; 2.8 of httpx's FCM figure"
    urgent = figures["campaign.email.urgent"]
    assert (urgent.value, urgent.p99_ms, urgent.met) == (150.0, 200.0, True)
    slow = _result() | {"campaign": {"email": _campaign_run(250.0)}}
    slow["campaign"]["email"]["urgent"]["delivered"] = 19
    [late] = [f for f in report.figures(slow) if f.key == "campaign.email.urgent"]
    assert (late.met, late.note) == (False, "19/20 delivered")
    assert [f.met for f in report.figures(slow) if f.key == "campaign.email"] == [False]
    missing = _result() | {
        "campaign": {"email": {"note": "n/a: no POST /api/v1/notifications/batch"}}
    }
    [figure] = [f for f in report.figures(missing) if f.key == "campaign.email"]
    assert figure.value is None
    assert "no POST" in (figure.note or "")
    assert report.failures(missing) == []


def test_a_campaign_that_duplicates_fails_the_run():
    result = _result() | {"campaign": {"push": _campaign_run(700.0, duplicated=2)}}
    assert report.failures(result) == ["campaign push: 100/100 accepted, 0 lost, 2 duplicated"]
    assert "| campaign push | 100 |" in report._counts_table(result)
    assert "ms per campaign push (100)" in report._cpu_table(result)


def test_a_lost_notification_fails_the_run_and_the_page_says_so(tmp_path):
    result = report.complete(_result(email=_run(400.0, 800.0, lost=1)))
    assert result["failures"] == ["email: 100/100 accepted, 1 lost, 0 duplicated"]
    result |= {
        "date": "today",
        "command": "make bench",
        "seconds": 1.0,
        "git": {"commit": "abc", "branch": "bench", "dirty": False},
        "machine": {
            "nproc": 2,
            "cpu_model": "x",
            "ram_gb": 1,
            "kernel": "k",
            "python": "3",
            "load_average_start": [1.0, 1.0, 1.0],
            "shared_servers": "shared",
        },
    }
    page = report.markdown(result, "## What limits it\n\nThe lead's notes.\n")
    assert "**FAILED**: email: 100/100 accepted, 1 lost" in page
    assert "| Gateway, single requests, 1 worker, c=50 | 2,250 req/s |" in page
    assert page.endswith("## What limits it\n\nThe lead's notes.\n")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(page)
    assert report._limits_section(doc) == "## What limits it\n\nThe lead's notes.\n"


async def test_a_ceiling_send_lost_in_transport_is_counted_not_fatal():
    failed: set[int] = set()

    async def send(worker: int, n: int) -> None:
        if worker == 0 and n == 3 and worker not in failed:  # once, like a closed keep-alive
            failed.add(worker)
            raise httpx.ReadError("connection closed")
        await asyncio.sleep(0.001)

    figure = await _for_a_while(0.2, 2, send)
    assert figure["errors"] == 1
    assert figure["sent"] >= 100


async def test_a_ceiling_whose_sends_keep_failing_fails_the_bench():
    async def send(worker: int, n: int) -> None:
        await asyncio.sleep(0.001)
        if n % 10 == 0:
            raise httpx.ConnectError("refused")

    with pytest.raises(BenchFailure, match="failed in transport"):
        await _for_a_while(0.1, 2, send)


async def test_a_campaign_batch_whose_answer_is_lost_is_posted_again_and_replays_count():
    posts: list[list[str]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        ids = [n["request_id"] for n in json.loads(request.content)["notifications"]]
        posts.append(ids)
        if len(posts) == 1:  # accepted, but the answer never reached the client
            raise httpx.ReadError("connection closed")
        items = [{"request_id": r, "notification_id": f"n-{r}", "outcome": "replayed"} for r in ids]
        items[-1] = {"request_id": ids[-1], "outcome": "refused", "error": {"status": 422}}
        return httpx.Response(202, json={"data": {"items": items}})

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(gateway), base_url="http://g"
    ) as http:
        sender = Sender(http, "/api/v1/notifications/batch", "notifications")
        batch = [notification("email", "u", f"r{n}", n) for n in range(3)]
        await sender.run([batch], connections=1)
    assert posts == [["r0", "r1", "r2"]] * 2  # the same request ids again
    assert [a.notification_id for a in sender.accepted] == ["n-r0", "n-r1"]
    assert (sender.resent, sender.refused) == (1, 1)
