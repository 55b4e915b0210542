"""What every service's Alembic ``env.py`` does: one async migration run, replicas taking turns.

``libs.storage.db.alembic_config`` puts the database URL in ``config.attributes["database_url"]``
(so ``python -m <service> migrate`` needs no ini); the alembic CLI may give ``sqlalchemy.url``.

Replicas may run ``migrate`` at the same time (Kubernetes runs it in each pod's init container):
each run holds a PostgreSQL advisory lock for its migration transaction, so they take turns and
the second finds nothing left to do, instead of failing on a table the first just created. The
lock is per database (PostgreSQL scopes advisory locks to one), the id per service.

Imported only by the ``env.py`` files, that is only when a migration runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from alembic import context
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


def lock_id(service: str) -> int:
    """A stable advisory lock id for ``service`` (its first four letters as a 32-bit number)."""
    return int.from_bytes(service.upper().encode()[:4].ljust(4, b"_"), "big")


def _database_url() -> str:
    config = context.config
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: run migrations through libs.storage.db.upgrade")
    return str(url)


def run_migrations(
    service: str,
    target_metadata: MetaData | None = None,
    include_object: Callable[..., bool] | None = None,
) -> None:
    """Run the migrations Alembic asked for (online or offline), as ``service``'s env.py."""
    options: dict[str, Any] = {"target_metadata": target_metadata, "compare_type": True}
    if include_object is not None:
        options["include_object"] = include_object
    if context.is_offline_mode():
        context.configure(
            url=_database_url(),
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **options,
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    def run(connection: Connection) -> None:
        context.configure(connection=connection, transaction_per_migration=False, **options)
        with context.begin_transaction():
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id(service)})
            context.run_migrations()

    async def online() -> None:
        engine = create_async_engine(_database_url(), poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run)
        finally:
            await engine.dispose()

    asyncio.run(online())
