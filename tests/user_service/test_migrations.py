"""Migrations create the schema on an empty database and are safe to run again (replicas running
them at once: tests/libs/test_migration_env.py)."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.engine import make_url

from user_service.cli import migrate


async def _inspect(url: str) -> tuple[set[str], list[str]]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        tables = {
            row["tablename"]
            for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        versions = [row["version_num"] for row in await conn.fetch("SELECT * FROM alembic_version")]
    finally:
        await conn.close()
    return tables, versions


async def test_migrations_create_every_table_on_an_empty_database(database_url):
    await asyncio.to_thread(migrate, database_url)

    tables, versions = await _inspect(database_url)
    assert {"users", "push_tokens", "signing_keys", "clients", "alembic_version"} <= tables
    assert versions == ["0002"]


async def test_migrating_twice_changes_nothing(database_url):
    await asyncio.to_thread(migrate, database_url)
    await asyncio.to_thread(migrate, database_url)

    tables, versions = await _inspect(database_url)
    assert "users" in tables
    assert versions == ["0002"]
