"""``python -m dlq_service [serve|migrate|archive]``."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from dlq_service.config import MIGRATIONS_DIR, DlqSettings
from dlq_service.service import archive_expired, utcnow
from libs.http.serve import main, serve
from libs.logging import configure_logging
from libs.storage.db import create_engine, session_factory, upgrade


def _serve() -> None:
    serve("dlq_service.app:create_app", DlqSettings())


def _migrate() -> None:
    upgrade(MIGRATIONS_DIR, DlqSettings().database_url)


async def _archive_once(settings: DlqSettings) -> int:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        return await archive_expired(
            session_factory(engine), timedelta(days=settings.retention_days), utcnow()
        )
    finally:
        await engine.dispose()


def _archive() -> None:
    """Archive every failed message past the retention now (the service does it periodically)."""
    settings = DlqSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    asyncio.run(_archive_once(settings))


if __name__ == "__main__":
    main({"serve": _serve, "migrate": _migrate, "archive": _archive})
