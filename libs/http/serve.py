"""Starting a service process: ``python -m <service> [serve|migrate|seed|...]``.

Every service is an ASGI app served by uvicorn with uvloop and httptools (ARCHITECTURE.md: the plain
asyncio loop stalls keep-alive requests with several workers). SIGTERM makes uvicorn stop accepting
connections, finish in-flight requests and run the lifespan shutdown, where consumers drain.

With ``workers`` > 1 uvicorn's supervisor starts that many worker processes on the one socket
(and restarts one that dies). Each worker configures its own logging (:func:`worker_app`), and
Prometheus metrics go through ``prometheus_client``'s multiprocess mode (a directory of memory-
mapped files made for this run), so ``/metrics`` sums the workers whichever answers the scrape.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import uvicorn

from libs.logging import configure_logging
from libs.settings import ServiceSettings

_WORKER_APP = "HERALD_WORKER_APP"  # what worker_app builds: "module:factory", logging settings
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable


def serve(
    app_factory: str, settings: ServiceSettings, *, grace_seconds: int = 30, workers: int = 1
) -> None:
    """Run ``module:factory`` (a function returning the app) until SIGTERM or Ctrl-C."""
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    if workers > 1:
        os.environ[_WORKER_APP] = json.dumps(
            [app_factory, settings.service_name, settings.log_level, settings.log_format]
        )
        # set before any worker imports prometheus_client (workers are spawned, not forked)
        metrics_dir = tempfile.mkdtemp(prefix=f"herald-{settings.service_name}-metrics-")
        os.environ[MULTIPROCESS_DIR] = metrics_dir
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
        app_factory = f"{__name__}:worker_app"
    uvicorn.run(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=grace_seconds,
        server_header=False,
    )


def worker_app() -> Any:
    """The app of one worker process: its logging configured, then the service's factory."""
    factory, service, level, fmt = json.loads(os.environ[_WORKER_APP])
    configure_logging(service, level, fmt)
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)()


def main(commands: Mapping[str, Callable[[], None]], default: str = "serve") -> None:
    """Dispatch ``sys.argv[1]`` (default ``serve``) to one of ``commands``."""
    name = sys.argv[1] if len(sys.argv) > 1 else default
    command = commands.get(name)
    if command is None:
        sys.exit(f"unknown command {name!r}; choose one of: {', '.join(commands)}")
    command()
