"""Schema changes go through Alembic: they apply to an empty database, twice, and match the
models."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Constraint, Index, Table, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import template_service.models  # noqa: F401  (registers the tables)
from libs.storage.db import alembic_config
from tests.template_service.conftest import MIGRATIONS, migrate

TABLES = {"templates", "template_versions"}


async def _tables_and_revision(url: str) -> tuple[set[str], str | None]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
            revision = None
            if "alembic_version" in tables:
                revision = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
        return tables, revision
    finally:
        await engine.dispose()


async def test_migrations_apply_to_an_empty_database_and_again(database_url: str) -> None:
    tables, _ = await _tables_and_revision(database_url)
    assert not tables & TABLES

    await migrate(database_url)
    tables, revision = await _tables_and_revision(database_url)
    assert tables >= TABLES
    assert revision == "0001"

    await migrate(database_url)  # a second run is a no-op, not an error
    tables_again, revision_again = await _tables_and_revision(database_url)
    assert (tables_again, revision_again) == (tables, revision)


def _table_of(diff: Any) -> str | None:
    op = diff[0] if isinstance(diff, list) else diff  # modify_* diffs come grouped in lists
    for part in op[1:]:
        if isinstance(part, Table):
            return str(part.name)
        if isinstance(part, Index | Constraint) and part.table is not None:
            return str(part.table.name)
    if len(op) > 2 and isinstance(op[2], str):  # ("add_column", schema, table, column), ...
        return op[2]
    return None


def _differences(sync_conn: Connection) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    diffs = compare_metadata(context, SQLModel.metadata)
    # SQLModel.metadata also holds other services' tables when the whole suite runs
    return [d for d in diffs if _table_of(d) in TABLES]


async def test_migrations_match_the_models(database_url: str) -> None:
    await migrate(database_url)
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
            # and the comparison does notice drift
            await conn.execute(text("ALTER TABLE templates DROP COLUMN description"))
            drift = await conn.run_sync(_differences)
            await conn.rollback()
    finally:
        await engine.dispose()
    assert [d[0] for d in drift] == ["add_column"]
    assert drift[0][2] == "templates"
    assert drift[0][3].name == "description"


@pytest.mark.parametrize("cycles", [2])
async def test_downgrade_then_upgrade_restores_the_schema(database_url: str, cycles: int) -> None:
    await migrate(database_url)
    config = alembic_config(MIGRATIONS, database_url)
    for _ in range(cycles):
        await asyncio.to_thread(command.downgrade, config, "base")
        tables, _ = await _tables_and_revision(database_url)
        assert not tables & TABLES
        await asyncio.to_thread(command.upgrade, config, "head")
        tables, revision = await _tables_and_revision(database_url)
        assert tables >= TABLES
        assert revision == "0001"
