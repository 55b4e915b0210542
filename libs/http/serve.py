"""Starting a service process: ``python -m <service> [serve|migrate|seed|...]``.

Every service is an ASGI app served by uvicorn with uvloop and httptools (ARCHITECTURE.md: the plain
asyncio loop stalls keep-alive requests with several workers). SIGTERM makes uvicorn stop accepting
connections, finish in-flight requests and run the lifespan shutdown, where consumers drain.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

import uvicorn

from libs.logging import configure_logging
from libs.settings import ServiceSettings


def serve(app_factory: str, settings: ServiceSettings, *, grace_seconds: int = 30) -> None:
    """Run ``module:factory`` (a function returning the app) until SIGTERM or Ctrl-C."""
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    uvicorn.run(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=grace_seconds,
        server_header=False,
    )


def main(commands: Mapping[str, Callable[[], None]], default: str = "serve") -> None:
    """Dispatch ``sys.argv[1]`` (default ``serve``) to one of ``commands``."""
    name = sys.argv[1] if len(sys.argv) > 1 else default
    command = commands.get(name)
    if command is None:
        sys.exit(f"unknown command {name!r}; choose one of: {', '.join(commands)}")
    command()
