"""``make bench``: throughput and latency of the whole system, every service a separate process.

Measures, each over several rounds (medians are what to quote; these machines are shared and
noisy):

- accept: the gateway answering POST /api/v1/notifications/ (202 after the broker confirm), with
  64 requests in flight, while the email consumer is stopped (so it measures the gateway, RabbitMQ
  and Redis, not the CPU the consumers would take): requests per second and latency percentiles;
- drain: the consumer started again, delivering that backlog (render, SMTP, status) alone;
- end to end: accepting and delivering at once, from the first POST of a burst until the last mail
  is in the SMTP sink (a separate process);
- latency: accepted -> delivered for notifications sent one at a time, from the status timeline.

Results are printed and written to benchmarks/results/latest.json (and appended to history.jsonl).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.isolation import VhostPool
from tests.support.system import System, running_system

RESULTS = ROOT / "benchmarks" / "results"
ROUNDS = 3
ACCEPT_REQUESTS = 1000
E2E_NOTIFICATIONS = 1000
LATENCY_SAMPLES = 60


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def _post(system: System, headers: dict[str, str], body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = await system.http.post(
        f"{system.url('gateway')}/api/v1/notifications/", json=body, headers=headers
    )
    if response.status_code != 202:
        raise RuntimeError(f"{response.status_code} {response.text}")
    return time.perf_counter() - started


def _body(user_id: str, code: str, i: int) -> dict[str, Any]:
    return {
        "notification_type": "email",
        "user_id": user_id,
        "template_code": code,
        "variables": {"name": f"bench {i}"},
        "request_id": f"bench-{uuid.uuid4().hex}",
    }


async def burst(system: System, user_id: str, code: str, count: int, in_flight: int) -> list[float]:
    headers = await system.admin()
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> float:
        async with gate:
            return await _post(system, headers, _body(user_id, code, i))

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def measure_accept_and_drain(
    system: System, user_id: str, code: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    accepts, drains = [], []
    for n in range(ROUNDS):
        [consumer] = system.stack.find("email_service")
        await asyncio.to_thread(system.stack.stop, consumer)
        before = len(system.sink.snapshot())
        started = time.perf_counter()
        latencies = await burst(system, user_id, code, ACCEPT_REQUESTS, in_flight=64)
        elapsed = time.perf_counter() - started
        accepts.append(
            {
                "per_second": ACCEPT_REQUESTS / elapsed,
                "p50_ms": percentile(latencies, 0.5) * 1000,
                "p95_ms": percentile(latencies, 0.95) * 1000,
                "p99_ms": percentile(latencies, 0.99) * 1000,
            }
        )
        restarted = system.stack.start("email_service")
        await asyncio.to_thread(system.stack.wait_ready, restarted)
        started = time.perf_counter()
        while len(system.sink.snapshot()) < before + ACCEPT_REQUESTS:
            await asyncio.sleep(0.05)
        drains.append({"per_second": ACCEPT_REQUESTS / (time.perf_counter() - started)})
        print(
            f"  round {n + 1}: accept {accepts[-1]['per_second']:.0f}/s "
            f"(p50 {accepts[-1]['p50_ms']:.1f} ms, p99 {accepts[-1]['p99_ms']:.1f} ms), "
            f"drain {drains[-1]['per_second']:.0f}/s",
            flush=True,
        )
    return _medians(accepts), _medians(drains)


async def measure_end_to_end(system: System, user_id: str, code: str) -> dict[str, Any]:
    rounds = []
    for n in range(ROUNDS):
        before = len(system.sink.snapshot())
        started = time.perf_counter()
        await burst(system, user_id, code, E2E_NOTIFICATIONS, in_flight=64)
        while len(system.sink.snapshot()) < before + E2E_NOTIFICATIONS:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        rounds.append({"per_second": E2E_NOTIFICATIONS / elapsed, "seconds": elapsed})
        print(
            f"  end-to-end round {n + 1}: {rounds[-1]['per_second']:.0f} notifications/s",
            flush=True,
        )
    return _medians(rounds)


async def measure_latency(system: System, user_id: str, code: str) -> dict[str, Any]:
    headers = await system.admin()
    delays = []
    for i in range(LATENCY_SAMPLES):
        body = _body(user_id, code, i)
        await _post(system, headers, body)
        record = await system.wait_status(body["request_id"], "delivered")
        events = {e["event"]: datetime.fromisoformat(e["at"]) for e in record["timeline"]}
        delays.append((events["delivered"] - events["accepted"]).total_seconds())
        await asyncio.sleep(0.05)
    result = {
        "p50_ms": percentile(delays, 0.5) * 1000,
        "p95_ms": percentile(delays, 0.95) * 1000,
        "max_ms": max(delays) * 1000,
    }
    print(
        f"  accepted -> delivered: p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms",
        flush=True,
    )
    return result


def _medians(rounds: list[dict[str, float]]) -> dict[str, Any]:
    return {
        **{key: round(statistics.median(r[key] for r in rounds), 1) for key in rounds[0]},
        "rounds": [{k: round(v, 1) for k, v in r.items()} for r in rounds],
    }


async def main() -> None:
    pool = VhostPool()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            print("bench: starting the system (every service a separate process)...", flush=True)
            async with running_system(pool, Path(workdir), sink_process=True) as system:
                system.http = httpx.AsyncClient(
                    timeout=30, limits=httpx.Limits(max_connections=100)
                )
                await system.create_template(
                    code="bench",
                    name="Bench",
                    type="email",
                    subject="Hello {{ name }}",
                    content="<p>Hello {{ name }}</p>",
                )
                user = await system.register_user()
                print("bench: accept (consumer stopped, 64 in flight), then drain", flush=True)
                accept, drain = await measure_accept_and_drain(system, user["id"], "bench")
                print("bench: end-to-end throughput (gateway -> SMTP sink)", flush=True)
                e2e = await measure_end_to_end(system, user["id"], "bench")
                print("bench: accepted -> delivered latency, one at a time", flush=True)
                latency = await measure_latency(system, user["id"], "bench")
                await system.http.aclose()
    finally:
        pool.close()
    result = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": "2 cores; every service, RabbitMQ, Redis and PostgreSQL on the same host",
        "accept": accept,
        "drain": drain,
        "end_to_end": e2e,
        "latency": latency,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    with (RESULTS / "history.jsonl").open("a") as history:
        history.write(json.dumps(result) + "\n")
    print("\nbench results (medians of", ROUNDS, "rounds):")
    print(
        f"  gateway accept:   {accept['per_second']:.0f} req/s  "
        f"p50 {accept['p50_ms']:.1f} ms  p95 {accept['p95_ms']:.1f} ms  "
        f"p99 {accept['p99_ms']:.1f} ms"
    )
    print(f"  delivery (drain): {drain['per_second']:.0f} notifications/s")
    print(f"  end to end email: {e2e['per_second']:.0f} notifications/s")
    print(
        f"  accepted->delivered (idle): p50 {latency['p50_ms']:.1f} ms  "
        f"p95 {latency['p95_ms']:.1f} ms"
    )
    print(f"written to {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    asyncio.run(main())
