"""The gateway alone: notifications accepted per second with the consumers stopped, beside the
minimal endpoint (the ceiling) with the same workers, connections and wrk script.

For each worker count: the minimal endpoint and the gateway run side by side, and each round
measures both at each connection count, alternating which goes first; the work queues are purged
after every measurement. The batch endpoint, where the gateway has one, is measured the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from benchmarks.ceilings import MinimalServer
from benchmarks.minimal_app import QUEUE as MINIMAL_QUEUE
from benchmarks.procstat import cpu_delta, machine_cpu
from benchmarks.stack import Bench
from benchmarks.stats import median_of
from benchmarks.wrk import Load, run_for
from gateway.config import GatewaySettings

WORK_QUEUES = ("email.queue", "push.queue")
SERVERS = ("redis", "rabbitmq", "postgresql")  # (their CPU per notification, beside the target's)
BATCH_PATHS = ("/api/v1/notifications/batch", "/api/v1/notifications/batch/")
MEDIANS = (
    "per_second",
    "latency_ms.p50",
    "latency_ms.p99",
    "failed",
    "cpu_ms_per_notification",
    "redis_cpu_ms_per_notification",
    "rabbitmq_cpu_ms_per_notification",
    "postgresql_cpu_ms_per_notification",
    "machine_cpu_ms_per_notification",
    "machine_busy",
    "at_full_use_per_second",
)


def workers_setting(settings: type[BaseSettings] = GatewaySettings) -> list[str]:
    """The environment variables of the gateway's worker-count setting ([] when it has none)."""
    for name, spec in settings.model_fields.items():
        if name == "workers" or name.endswith("_workers"):
            alias = spec.validation_alias
            if isinstance(alias, AliasChoices):
                return [c for c in alias.choices if isinstance(c, str)]
            return [alias if isinstance(alias, str) else name.upper()]
    return []


def workers_env(setting: list[str], workers: int) -> dict[str, str]:
    """The environment that runs the gateway with ``workers`` workers (``setting``: the names
    :func:`workers_setting` found)."""
    return {name: str(workers) for name in setting}


async def batch_endpoint(gateway: str) -> tuple[str, str] | None:
    async with httpx.AsyncClient(timeout=10) as http:
        return batch_in_openapi((await http.get(f"{gateway}/openapi.json")).json())


def batch_in_openapi(spec: dict[str, Any]) -> tuple[str, str] | None:
    """(path, array property) of the batch endpoint, if the OpenAPI document has one ("" as the
    property: the body is the array itself)."""
    for path in BATCH_PATHS:
        post = spec.get("paths", {}).get(path, {}).get("post")
        if post is None:
            continue
        content = post.get("requestBody", {}).get("content", {})
        schema = _resolve(spec, content.get("application/json", {}).get("schema", {}))
        if schema.get("type") == "array":
            return path, ""
        for prop, sub in schema.get("properties", {}).items():
            if _resolve(spec, sub).get("type") == "array":
                return path, prop
        return path, "notifications"
    return None


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return dict(spec["components"]["schemas"][ref.rsplit("/", 1)[-1]])
    return schema


async def measure_intake(bench: Bench) -> dict[str, Any]:
    config, say = bench.config, bench.say
    setting = workers_setting()
    batch = await batch_endpoint(bench.gateway)
    notes = {}
    if not setting:
        notes["workers"] = "gateway/config.py has no workers setting: the gateway ran 1 worker"
    if batch is None:
        notes["batch"] = "the gateway has no POST /api/v1/notifications/batch"
    for note in notes.values():
        say(f"intake: {note}")
    say("intake: consumers stopped; the gateway and the minimal endpoint measured alone")
    await bench.stop_consumers()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {"minimal": {}, "gateway": {}, "batch": {}}
    processes: dict[str, int] = {}
    # (in flight, path, array property) of each bulk-intake load
    batch_runs = [(c, *batch) for c in config.batch_connections] if batch else []
    try:
        for workers in config.workers:
            gateway_runs = workers == 1 or bool(setting)
            # known to the bench before it starts: a run stopped meanwhile still stops it
            bench.minimal = MinimalServer(
                workers,
                amqp_url=bench.amqp_url,
                redis_url=bench.redis_url,
                redis_prefix=bench.redis_prefix,
            )
            await asyncio.to_thread(bench.minimal.start)
            if setting:
                env = workers_env(setting, workers)
                processes[f"w{workers}"] = await bench.restart_gateway(env)
            elif gateway_runs:
                processes[f"w{workers}"] = bench.stat.processes()["gateway"]
            targets = {"minimal": bench.minimal.url} | (
                {"gateway": bench.gateway} if gateway_runs else {}
            )
            for url in targets.values():  # warm up: connections, caches, JWKS
                await run_for(url, await bench.load("email", 10), 1)
            await bench.purge(*WORK_QUEUES, MINIMAL_QUEUE)
            for n in range(config.rounds):
                order = list(targets) if n % 2 == 0 else list(reversed(targets))
                for connections in config.connections:
                    for target in order:
                        load = await bench.load("email", connections)
                        summary = await _measure(bench, target, targets[target], load)
                        key = f"w{workers}.c{connections}"
                        raw[target].setdefault(key, []).append(summary)
                        say(_line(f"{target} {key} round {n + 1}", summary))
                for connections, path, prop in batch_runs if gateway_runs else ():
                    load = await bench.load(
                        "email", connections, path=path, batch=config.batch_size, batch_field=prop
                    )
                    summary = await _measure(bench, "gateway", bench.gateway, load)
                    key = f"w{workers}.c{connections}"
                    raw["batch"].setdefault(key, []).append(summary)
                    say(_line(f"batch {key} round {n + 1}", summary))
            bench.minimal.stop()
            bench.minimal = None
    finally:
        if bench.minimal is not None:
            bench.minimal.stop()
            bench.minimal = None
        if setting:
            await bench.restart_gateway({})
        await bench.purge_until_quiet(*WORK_QUEUES, MINIMAL_QUEUE)
        await bench.start_consumers()
    return {
        "workers_setting": setting or None,
        "gateway_processes": processes,
        "batch_endpoint": {"path": batch[0], "field": batch[1]} if batch else None,
        "batch_size": config.batch_size if batch else None,
        "notes": notes,
        **{
            target: {key: median_of(rounds, *MEDIANS) for key, rounds in by_key.items()}
            for target, by_key in raw.items()
        },
    }


async def _measure(bench: Bench, target: str, url: str, load: Load) -> dict[str, Any]:
    """One fixed-duration run, with the CPU per notification accepted of the target, of Redis,
    RabbitMQ and PostgreSQL, and of the whole machine (wrk and the kernel included), and how busy
    the machine was; the work queues purged after it."""
    before, machine_before = bench.stat.cpu(), machine_cpu()
    result = await run_for(url, load, bench.config.duration)
    used, machine = cpu_delta(before, bench.stat.cpu()), machine_cpu().since(machine_before)
    await bench.purge_until_quiet(*WORK_QUEUES, MINIMAL_QUEUE)
    accepted = max(result.items, 1)
    process = "minimal endpoint" if target == "minimal" else "gateway"

    def each(seconds: float) -> float:
        return round(seconds * 1000 / accepted, 3)

    return result.summary() | {
        "cpu_ms_per_notification": each(used[process]),
        **{f"{server}_cpu_ms_per_notification": each(used[server]) for server in SERVERS},
        "machine_cpu_ms_per_notification": each(machine.busy),
        "machine_busy": round(machine.busy_share, 3),
        # the rate were the machine fully busy at the same CPU per notification (per round: the
        # median rate over the median busy share would mix two rounds)
        "at_full_use_per_second": (
            round(result.per_second / machine.busy_share) if machine.busy_share else None
        ),
    }


def _line(label: str, summary: dict[str, Any]) -> str:
    failed = f", {summary['failed']} failed {summary['statuses']}" if summary["failed"] else ""
    latency = summary["latency_ms"]
    return (
        f"  {label}: {summary['per_second']:,.0f}/s, p50 {latency['p50']} ms, "
        f"p99 {latency['p99']} ms, CPU {summary['cpu_ms_per_notification']} ms each{failed}"
    )
