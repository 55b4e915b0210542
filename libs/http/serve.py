"""Starting a service process: ``python -m <service> [serve|migrate|seed|...]``.

Every service is an ASGI app served by uvicorn with uvloop and httptools (ARCHITECTURE.md: the plain
asyncio loop stalls keep-alive requests with several workers). SIGTERM makes uvicorn stop accepting
connections, finish in-flight requests and run the lifespan shutdown, where consumers drain.

With ``workers`` > 1 uvicorn's supervisor starts that many worker processes on the one socket
(and restarts one that dies; a worker stops when the supervisor dies, however it dies). Each
worker configures its own logging (:func:`worker_app`), and
Prometheus metrics go through ``prometheus_client``'s multiprocess mode (a directory of memory-
mapped files made for this run), so ``/metrics`` sums the workers whichever answers the scrape.

Once the lifespan has started (everything imported, every client open), each process collects
and then freezes its heap (:class:`FrozenAfterStartup`): the interpreter's full garbage
collections otherwise walk the whole startup heap (FastAPI, pydantic, SQLAlchemy: hundreds of
thousands of objects) whenever enough objects have outlived two young collections, which under load
paused the gateway for 30-200 ms several times a minute; frozen objects are skipped. It then
collects its young generation every :data:`GC_THRESHOLDS` allocations rather than every 700: almost
all of a request's objects are freed by reference counting, and a batch of 1,000 notifications
makes tens of thousands of them, so the default threshold ran a young collection every few
notifications (8-10 % of the gateway's CPU per notification, single requests and batches alike:
``docs/decisions.md``).
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.logging import configure_logging
from libs.settings import ServiceSettings

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_WORKER_APP = "HERALD_WORKER_APP"  # for worker_app: "module:factory", logging, supervisor pid
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
GC_THRESHOLDS = (20_000, 50, 100)
"""``gc.set_threshold`` of a served process once started (the interpreter's: 700, 10, 10)."""


def serve(
    app_factory: str, settings: ServiceSettings, *, grace_seconds: int = 30, workers: int = 1
) -> None:
    """Run ``module:factory`` (a function returning the app) until SIGTERM or Ctrl-C."""
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    supervisor = os.getpid() if workers > 1 else None
    os.environ[_WORKER_APP] = json.dumps(
        [app_factory, settings.service_name, settings.log_level, settings.log_format, supervisor]
    )
    if workers > 1:
        # set before any worker imports prometheus_client (workers are spawned, not forked)
        metrics_dir = tempfile.mkdtemp(prefix=f"herald-{settings.service_name}-metrics-")
        os.environ[MULTIPROCESS_DIR] = metrics_dir
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    uvicorn.run(
        f"{__name__}:worker_app",
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


def worker_app() -> ASGIApp:
    """The app of one worker process: its logging configured, then the service's factory, its
    heap frozen once started."""
    factory, service, level, fmt, supervisor = json.loads(os.environ[_WORKER_APP])
    configure_logging(service, level, fmt)
    if supervisor is not None:
        _stop_with(supervisor)
    module, _, name = factory.partition(":")
    return FrozenAfterStartup(getattr(importlib.import_module(module), name)())


def _stop_with(supervisor: int) -> None:
    """Have the kernel send this worker SIGTERM (a graceful stop) when its supervisor dies, even
    by SIGKILL: orphaned workers would go on holding the port, unsupervised, and the service's
    restart would fail with "address already in use" for as long as they live (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class FrozenAfterStartup:
    """ASGI wrapper: when the app reports its lifespan started, collect once, ``gc.freeze()``,
    so later collections skip every object made at startup, and set :data:`GC_THRESHOLDS`. Only
    for a served process: a test that starts and stops apps in one interpreter would keep their
    cyclic garbage forever."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_and_freeze(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                gc.collect()
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLDS)
            await send(message)

        await self.app(scope, receive, send_and_freeze)


def main(commands: Mapping[str, Callable[[], None]], default: str = "serve") -> None:
    """Dispatch ``sys.argv[1]`` (default ``serve``) to one of ``commands``."""
    name = sys.argv[1] if len(sys.argv) > 1 else default
    command = commands.get(name)
    if command is None:
        sys.exit(f"unknown command {name!r}; choose one of: {', '.join(commands)}")
    command()
