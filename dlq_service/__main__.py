"""``python -m dlq_service [serve|migrate|archive]``, or a command of the operator's command line
(``python -m dlq_service list|show|republish|discard|stats|health|lookup|login ...``, the same as
``herald-dlq``; see :mod:`dlq_service.cli`).

The service's modules are imported only for the service's commands: the command line starts in a
fraction of a second.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import timedelta


def _serve() -> None:
    from dlq_service.config import DlqSettings
    from libs.http.serve import serve

    serve("dlq_service.app:create_app", DlqSettings())


def _migrate() -> None:
    from dlq_service.config import MIGRATIONS_DIR, DlqSettings
    from libs.storage.db import upgrade

    upgrade(MIGRATIONS_DIR, DlqSettings().database_url)


def _archive() -> None:
    """Archive every failed message past the retention now (the service does it periodically)."""
    from dlq_service.config import DlqSettings
    from dlq_service.service import archive_expired, utcnow
    from libs.logging import configure_logging
    from libs.storage.db import create_engine, session_factory

    settings = DlqSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_format)

    async def once() -> int:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            return await archive_expired(
                session_factory(engine), timedelta(days=settings.retention_days), utcnow()
            )
        finally:
            await engine.dispose()

    asyncio.run(once())


SERVICE_COMMANDS: dict[str, Callable[[], None]] = {
    "serve": _serve,
    "migrate": _migrate,
    "archive": _archive,
}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] not in SERVICE_COMMANDS:
        from dlq_service import cli

        cli.run()
    else:
        from libs.http.serve import main

        main(SERVICE_COMMANDS)
