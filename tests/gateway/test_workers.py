"""GATEWAY_WORKERS: ``python -m gateway`` as uvicorn's supervisor with worker processes on one
port, whose metrics /metrics sums whichever worker answers the scrape."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.test_send import body
from tests.support.amqp import queue_depth
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
METRICS_TOKEN = "test-metrics-token"


def _sent(exposition: str) -> float:
    """Requests the POST route answered 202, over every worker."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "http_requests_total"
                and labels.get("route") == "/api/v1/notifications/"
                and labels.get("status") == "202"
            ):
                total += sample.value
    return total


def _environment(gateway_settings, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_WORKERS": "2",
        "GATEWAY_PORT": str(port),
        "RABBITMQ_URL": gateway_settings.rabbitmq_url,
        "REDIS_URL": gateway_settings.redis_url,
        "REDIS_KEY_PREFIX": gateway_settings.redis_key_prefix,
        "GATEWAY_DATABASE_URL": gateway_settings.database_url,
        "USER_SERVICE_URL": gateway_settings.user_service_url,
        "TEMPLATE_SERVICE_URL": gateway_settings.template_service_url,
        "VERIFY_REFERENCES": "false",
        "METRICS_TOKEN": METRICS_TOKEN,
        "LOG_LEVEL": "WARNING",
    }


async def _start(
    gateway_settings, port: int, stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """``stderr``: DEVNULL where the workers may outlive the process (its wait() would wait for
    the pipe they hold)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        cwd=ROOT,
        env=_environment(gateway_settings, port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )


async def _ready(http: httpx.AsyncClient) -> None:
    for _ in range(300):
        try:
            if (await http.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the gateway never became ready")


async def _workers(supervisor: int) -> list[int]:
    children = await asyncio.to_thread(
        Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text
    )
    return [int(pid) for pid in children.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_share_the_port_and_report_metrics_together(gateway_settings, mint, amqp):
    port = free_port()
    process = await _start(gateway_settings, port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await _ready(http)
            workers = await _workers(process.pid)
            assert len(workers) >= 2, workers  # uvicorn's supervisor and its workers
            headers = mint.headers("service")
            answers = await asyncio.gather(
                *(
                    http.post("/api/v1/notifications/", json=body(), headers=headers)
                    for _ in range(40)
                )
            )
            assert [a.status_code for a in answers] == [202] * 40
            scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
            for _ in range(6):  # whichever worker answers, the sum is the same
                metrics = await http.get("/metrics", headers=scrape)
                assert metrics.status_code == 200
                assert _sent(metrics.text) == 40
            assert (await http.get("/metrics")).status_code == 401
        assert await queue_depth(amqp, "email.queue") == 40
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 40)
        except TimeoutError:
            process.kill()
            raise
    assert process.returncode == 0, stderr.decode()[-2000:]


async def test_the_workers_stop_when_their_supervisor_is_killed(gateway_settings):
    """SIGKILL to the supervisor: its workers stop too (gracefully) and free the port, so the
    process manager's restart can bind it; orphans would hold it, unsupervised."""
    port = free_port()
    process = await _start(gateway_settings, port, stderr=asyncio.subprocess.DEVNULL)
    workers: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            await _ready(http)
            workers = await _workers(process.pid)
            assert len(workers) >= 2, workers
            process.kill()
            await process.wait()
            for _ in range(300):
                if not any(_alive(pid) for pid in workers):
                    break
                await asyncio.sleep(0.1)
            assert not any(_alive(pid) for pid in workers), "workers outlived their supervisor"
            with pytest.raises(httpx.TransportError):
                await http.get("/health")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pid in filter(_alive, workers):  # never leave orphans behind, even on failure
            os.kill(pid, signal.SIGKILL)
