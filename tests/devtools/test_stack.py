"""``Stack.prepare``: every service's migrate and seed commands, in one interpreter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from devtools.stack import SERVICES, Stack, base_env
from tests.support.isolation import REDIS_URL, temp_database, temp_redis_prefix


@asynccontextmanager
async def fresh_stack(log_dir: Path) -> AsyncIterator[tuple[Stack, dict[str, str]]]:
    async with (
        temp_database("users") as users,
        temp_database("templates") as templates,
        temp_database("dlq") as dlq,
        temp_redis_prefix("prepare") as prefix,
    ):
        urls = {"users": users, "templates": templates, "dlq": dlq}
        env = base_env() | {
            "ENVIRONMENT": "test",
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": prefix,
            "USER_DATABASE_URL": users,
            "TEMPLATE_DATABASE_URL": templates,
            "DLQ_DATABASE_URL": dlq,
        }
        yield Stack(env, log_dir=log_dir), urls


async def _fetch_column(url: str, query: str) -> list[str]:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return sorted(str(row[0]) for row in await conn.fetch(query))
    finally:
        await conn.close()


async def test_prepare_migrates_and_seeds_every_database_and_can_run_again(
    infrastructure, tmp_path
):
    async with fresh_stack(tmp_path) as (stack, urls):
        await asyncio.to_thread(stack.prepare)
        emails = await _fetch_column(urls["users"], "SELECT email FROM users")
        codes = await _fetch_column(urls["templates"], "SELECT DISTINCT code FROM templates")
        dlq_tables = await _fetch_column(
            urls["dlq"], "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        assert "admin@herald.local" in emails
        assert {"welcome", "welcome_push"} <= set(codes)
        assert "failed_messages" in dlq_tables
        log = (tmp_path / "prepare.log").read_text()
        for spec in SERVICES:
            for command in spec.setup_commands:
                assert f"prepare: {spec.name} {command} done" in log

        await asyncio.to_thread(stack.prepare)  # already done: changes nothing, fails nothing
        assert await _fetch_column(urls["users"], "SELECT email FROM users") == emails
        assert await _fetch_column(urls["templates"], "SELECT DISTINCT code FROM templates") == (
            codes
        )


async def test_a_failing_step_names_the_service_and_command(infrastructure, tmp_path):
    async with fresh_stack(tmp_path) as (stack, _):
        stack.env["TEMPLATE_DATABASE_URL"] = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
        with pytest.raises(RuntimeError) as failure:
            await asyncio.to_thread(stack.prepare)
        first_line = str(failure.value).splitlines()[0]
        assert first_line.startswith("prepare: template_service migrate failed: ")
        assert "Connect call failed" in first_line
