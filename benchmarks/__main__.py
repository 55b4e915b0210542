"""``make bench``: throughput, latency, CPU and memory of the whole system, each figure beside its
ceiling measured in the same run.

Options are ``BENCH_*`` environment variables (``benchmarks/config.py``); ``BENCH_QUICK=1`` is a
short run. Progress is printed as it goes; results go to ``benchmarks/results/latest.json`` (and
``history.jsonl``) and ``docs/benchmarks.md``. Exits 1 when a notification was lost or duplicated.
``BENCH_WORKDIR`` keeps the services' logs and wrk's records there.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import harness, report
from benchmarks.config import BenchConfig, BenchFailure, Progress, run_until_stopped
from tests.support.isolation import VhostPool


async def main() -> int:
    config = BenchConfig.from_env()
    say = Progress()
    say(f"bench: {config.command}; phases {', '.join(config.phases)}")
    pool = VhostPool(batch=2)
    try:
        with tempfile.TemporaryDirectory(prefix="herald-bench-") as temporary:
            # BENCH_WORKDIR keeps the services' logs and wrk's records after the run
            workdir = Path(os.environ.get("BENCH_WORKDIR") or temporary)
            await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
            result = await harness.run(config, pool, workdir, say)
    except BenchFailure as exc:
        say(f"bench FAILED: {exc}")
        return 1
    finally:
        pool.close()
    result = report.complete(result)
    report.write(result, config)
    print()
    print(report.figures_table(result))
    print()
    say(f"written: {config.results_dir / 'latest.json'}, {config.doc}")
    for warning in result["warnings"]:
        say(f"bench warning: {warning}")
    for failure in result["failures"]:
        say(f"bench FAILED: {failure}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    run_until_stopped(main, "bench")
