"""The schema comes from the migrations; the topology is declared by whoever starts first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aio_pika.abc import AbstractRobustConnection
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import dlq_service.models  # noqa: F401 - the tables
from dlq_service.config import MIGRATIONS_DIR, DlqSettings
from libs.storage.db import alembic_config, create_engine
from tests.dlq_service.helpers import queue_depth, running


async def test_migrations_match_the_models_and_downgrade(dlq_database_url: str) -> None:
    engine = create_engine(dlq_database_url, pool_size=1)
    try:
        # SQLModel.metadata is shared by every service imported in this process: compare ours only
        ours = MetaData()
        for name in ("failed_messages", "failed_message_events"):
            SQLModel.metadata.tables[name].to_metadata(ours)

        def diff(connection: Connection) -> list[object]:
            context = MigrationContext.configure(connection)
            return list(compare_metadata(context, ours))

        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
        config = alembic_config(MIGRATIONS_DIR, dlq_database_url)
        await asyncio.to_thread(command.downgrade, config, "base")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert "failed_messages" not in tables
        await asyncio.to_thread(command.upgrade, config, "head")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert {"failed_messages", "failed_message_events"} <= set(tables)
    finally:
        await engine.dispose()


async def test_two_instances_declare_the_same_topology_without_conflict(
    settings_factory: Callable[..., DlqSettings],
    token_factory: Callable[..., str],
    amqp: AbstractRobustConnection,
) -> None:
    settings = settings_factory(email_retry_delays_ms=[1000, 4000], push_retry_delays_ms=[1500])
    async with (
        running(settings, token_factory("admin")) as first,
        running(settings, token_factory("admin")) as second,
    ):
        for harness in (first, second):
            assert (await harness.client.get("/ready")).status_code == 200
    for queue in (
        "email.queue",
        "push.queue",
        "failed.queue",
        "email.delay.1000",
        "email.delay.2000",
        "email.delay.4000",
        "push.delay.1500",
        "push.delay.2000",
    ):
        assert await queue_depth(amqp, queue) == 0  # exists (a passive declare would fail)
