"""PostgreSQL for the services that own a database (SQLModel + asyncpg, Alembic migrations).

Alembic runs programmatically so ``python -m <service> migrate`` needs no ini file; it is imported
when a migration runs, not by a service that serves (a tenth of a second of every start). (The
request session, which commits on success and rolls back on error, is
``libs.http.sessions.SessionDep``.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

if TYPE_CHECKING:
    from alembic.config import Config


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist. True if it was created."""
    name = make_url(url).database
    if not name:
        raise ValueError(f"no database name in {url!r}")
    conn = await asyncpg.connect(_asyncpg_dsn(url, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False  # another process created it meanwhile
        return True
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    name = make_url(url).database
    conn = await asyncpg.connect(_asyncpg_dsn(url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def alembic_config(migrations_dir: Path, url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["database_url"] = url
    return config


def upgrade(migrations_dir: Path, url: str) -> None:
    """Create the database if needed and apply every migration (blocking; run from a CLI)."""
    from alembic import command

    asyncio.run(ensure_database(url))
    command.upgrade(alembic_config(migrations_dir, url), "head")


async def ping(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")
    return {}
