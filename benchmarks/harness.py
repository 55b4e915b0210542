"""One benchmark run: the system started once, then the phases in order.

- idle: CPU each process uses doing nothing, resident memory before any load;
- intake: the gateway alone beside the minimal endpoint (``intake.py``);
- ceilings: SMTP and FCM straight into the stand-ins (``ceilings.py``), rounds interleaved;
- e2e: email (a smaller run each round, the full count once, a paced run for latency), then push
  (``e2e.py``), each checked for lost and duplicated notifications;
- campaign: email, then push, sent in batches while the consumers run (``campaign.py``), checked
  the same way.

Returns everything as one JSON-able dict; ``report.py`` turns it into figures and ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.campaign import run_campaign
from benchmarks.ceilings import FCM_CLIENTS, fcm_ceiling, smtp_ceiling
from benchmarks.config import ROOT, BenchConfig, Progress
from benchmarks.e2e import run_e2e
from benchmarks.intake import measure_intake
from benchmarks.procstat import cpu_delta
from benchmarks.stack import Bench, open_bench
from benchmarks.stats import median_of
from benchmarks.wrk import ensure_wrk
from tests.support.isolation import VhostPool


async def run(config: BenchConfig, pool: VhostPool, workdir: Path, say: Progress) -> dict[str, Any]:
    ensure_wrk()
    result: dict[str, Any] = {
        "schema": 1,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": config.command,
        "git": git_state(),
        "machine": machine(),
        "settings": config.settings(),
    }
    async with open_bench(config, pool, workdir, say) as bench:
        result["idle"] = await measure_idle(bench)
        if "intake" in config.phases:
            say("phase intake: the gateway alone, beside the minimal endpoint")
            result["intake"] = await measure_intake(bench)
        if "ceilings" in config.phases:
            say("phase ceilings: SMTP and FCM straight into the stand-ins")
            result["ceilings"] = await measure_ceilings(bench)
        if "e2e" in config.phases:
            say("phase e2e: through the gateway to the SMTP sink and the FCM stand-in")
            result["e2e"] = await measure_e2e(bench)
        if "campaign" in config.phases and config.campaign_count:
            say("phase campaign: batches through the gateway while the consumers deliver")
            result["campaign"] = {
                kind: await run_campaign(
                    bench, kind, config.campaign_count, label=f"campaign-{kind}"
                )
                for kind in ("email", "push")
            }
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["seconds"] = round(time.monotonic() - say.started, 1)
    return result


async def measure_idle(bench: Bench) -> dict[str, Any]:
    seconds = bench.config.idle_seconds
    bench.say(f"idle: {seconds:g} s with nothing sent (idle CPU, resident memory)")
    before = bench.stat.cpu()
    await asyncio.sleep(seconds)
    used = cpu_delta(before, bench.stat.cpu())
    return {
        "cpu_ms_per_second": {name: round(s * 1000 / seconds, 2) for name, s in used.items()},
        "rss_mb": {name: round(b / 2**20, 1) for name, b in bench.stat.rss().items()},
        "processes": bench.stat.processes(),
    }


async def measure_ceilings(bench: Bench) -> dict[str, Any]:
    config, say, system = bench.config, bench.say, bench.system
    sink, fcm = system.sink, system.fcm
    project = str(json.loads(fcm.account.read_text())["project_id"])
    runs: dict[str, list[dict[str, Any]]] = {
        "smtp_prebuilt": [],
        "smtp_build_each": [],
        **{f"fcm_{client}": [] for client in FCM_CLIENTS},
    }
    for n in range(config.rounds):
        for build_each in (False, True):
            key = "smtp_build_each" if build_each else "smtp_prebuilt"
            figure = await smtp_ceiling(
                sink.host,
                sink.port,
                config.duration,
                config.smtp_connections,
                build_each=build_each,
            )
            runs[key].append(figure)
            say(f"  {key} round {n + 1}: {figure['per_second']:,.0f} mails/s")
        for client in FCM_CLIENTS:
            figure = await fcm_ceiling(
                fcm.url, project, config.duration, config.fcm_concurrency, client=client
            )
            runs[f"fcm_{client}"].append(figure)
            say(f"  fcm with {client} round {n + 1}: {figure['per_second']:,.0f} sends/s")
    medians = {key: median_of(rounds, "per_second") for key, rounds in runs.items()}
    # the stand-in's ceiling is what the faster client gets out of it
    fastest = max(FCM_CLIENTS, key=lambda c: float(medians[f"fcm_{c}"]["per_second"] or 0))
    return medians | {
        "fcm": medians[f"fcm_{fastest}"] | {"client": fastest},
        "smtp_connections": config.smtp_connections,
        "fcm_concurrency": config.fcm_concurrency,
    }


async def measure_e2e(bench: Bench) -> dict[str, Any]:
    config = bench.config
    c = config.e2e_connections
    out: dict[str, Any] = {}
    if config.e2e_small:
        small = [
            await run_e2e(
                bench, "email", config.e2e_small, label=f"email-small-{n + 1}", connections=c
            )
            for n in range(config.rounds)
        ]
        out["email_small"] = median_of(
            small, "delivered_per_second", "request_to_delivery_ms.p99"
        ) | {"count": config.e2e_small, "ok": all(r["ok"] for r in small)}
    out["email"] = await run_e2e(bench, "email", config.e2e_count, label="email", connections=c)
    if config.paced_count:
        out["email_paced"] = await run_e2e(
            bench,
            "email",
            config.paced_count,
            label="email-paced",
            connections=c,
            rate=config.paced_rate,
        )
    out["push"] = await run_e2e(bench, "push", config.e2e_count, label="push", connections=c)
    return out


def machine() -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_kb = int(meminfo[meminfo.index("MemTotal:") + 1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gb": round(ram_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_start": list(os.getloadavg()),
        "shared_servers": "RabbitMQ, Redis and PostgreSQL are shared with other users of the "
        "machine: their CPU figures include others' work",
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }
