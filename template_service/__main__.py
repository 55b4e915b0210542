"""``python -m template_service [serve|migrate|seed]``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from libs.clients.cache import VersionedCache
from libs.http.serve import main, serve
from libs.logging import configure_logging
from libs.storage.db import create_engine, session_factory, upgrade
from libs.storage.redis import Keys, create_redis
from template_service.config import TemplateSettings
from template_service.rendering import SandboxRenderer
from template_service.seed import seed_demo_templates

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def run_serve() -> None:
    serve("template_service.app:create_app", TemplateSettings())


def run_migrate() -> None:
    settings = TemplateSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    upgrade(MIGRATIONS, settings.database_url)


async def _seed(settings: TemplateSettings) -> None:
    engine = create_engine(settings.database_url, pool_size=2)
    redis = create_redis(settings.redis_url)
    try:
        await seed_demo_templates(
            session_factory(engine),
            VersionedCache(redis, Keys(settings.redis_key_prefix)),
            SandboxRenderer(),
            settings.default_language,
        )
    finally:
        await redis.aclose()
        await engine.dispose()


def run_seed() -> None:
    """Apply migrations, then create the demo templates that are missing."""
    run_migrate()
    asyncio.run(_seed(TemplateSettings()))


if __name__ == "__main__":
    main({"serve": run_serve, "migrate": run_migrate, "seed": run_seed})
