"""Every service's migrations, run by two replicas at once on an empty database, take turns.

Separate processes, as replicas are (Alembic's context is global to a process); the shared
environment is ``libs/storage/migration_env.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import PIPE

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from libs.storage.migration_env import lock_id

SERVICES = {
    "gateway": ("GATEWAY_DATABASE_URL", "notifications"),
    "user_service": ("USER_DATABASE_URL", "users"),
    "template_service": ("TEMPLATE_DATABASE_URL", "templates"),
    "dlq_service": ("DLQ_DATABASE_URL", "failed_messages"),
}


async def _tables_and_versions(url: str) -> tuple[set[str], list[str]]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        versions = await conn.fetch("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}, [row["version_num"] for row in versions]


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_replicas_migrating_at_once_take_turns(service, database_url):
    variable, table = SERVICES[service]
    env = {**os.environ, variable: database_url}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", service, "migrate", env=env, stdout=PIPE, stderr=PIPE
        )
        for _ in range(2)
    ]
    results = await asyncio.gather(*(process.communicate() for process in processes))

    assert [process.returncode for process in processes] == [0, 0], results
    tables, versions = await _tables_and_versions(database_url)
    assert table in tables
    assert len(versions) == 1


@pytest.mark.unit
def test_each_service_takes_its_own_lock():
    ids = {service: lock_id(service) for service in SERVICES}
    assert ids["user_service"] == 0x5553_4552  # "USER", the id user_service has always used
    assert len(set(ids.values())) == len(ids)
    assert all(0 < i < 2**31 for i in ids.values())  # a PostgreSQL bigint, and positive
