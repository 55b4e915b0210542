"""``python -m template_service seed``: demo templates, created once, usable right away."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy import func
from sqlmodel import select

from libs.clients.cache import VersionedCache
from libs.storage.db import create_engine, session_factory
from libs.storage.redis import Keys
from template_service.models import Template, TemplateVersion
from template_service.rendering import SandboxRenderer
from template_service.seed import seed_demo_templates
from tests.support.isolation import REDIS_URL
from tests.support.servers import AppClient
from tests.template_service.conftest import TemplateApi, migrate

ROOT = Path(__file__).resolve().parents[2]
DEMO = ["welcome:en", "welcome:pt", "welcome_push:en", "password_reset:en"]


async def _counts(database_url: str) -> tuple[int, int]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            templates = (await session.exec(select(func.count()).select_from(Template))).one()
            versions = (await session.exec(select(func.count()).select_from(TemplateVersion))).one()
            return int(templates), int(versions)
    finally:
        await engine.dispose()


async def test_seed_is_idempotent_and_bumps_caches(
    database_url: str, redis: Redis, keys: Keys
) -> None:
    await migrate(database_url)
    engine = create_engine(database_url, pool_size=1)
    cache = VersionedCache(redis, keys)
    try:
        sessions = session_factory(engine)
        first = await seed_demo_templates(sessions, cache, SandboxRenderer(), "en")
        seeded_version = await redis.get(keys.cache_version("template", "welcome"))
        second = await seed_demo_templates(sessions, cache, SandboxRenderer(), "en")
    finally:
        await engine.dispose()

    assert first == DEMO
    assert second == []
    assert await _counts(database_url) == (4, 4)
    assert seeded_version is not None  # the seed invalidated what delivery may have cached
    assert await redis.get(keys.cache_version("template", "welcome")) == seeded_version


async def test_seeded_templates_render(api: TemplateApi, client: AppClient) -> None:
    state = client.state
    await seed_demo_templates(state.sessions, state.cache, state.renderer, "en")
    variables = {"name": "Ana", "link": "https://herald.test/start"}

    en = (await api.render("welcome", variables)).json()["data"]
    pt = (await api.render("welcome", variables, language="pt-BR")).json()["data"]
    push = (await api.render("welcome_push", variables)).json()["data"]
    reset = (await api.render("password_reset", variables)).json()["data"]

    assert (en["language"], en["subject"]) == ("en", "Welcome, Ana!")
    assert "Get started (https://herald.test/start)" in en["text"]
    assert (pt["language"], pt["subject"]) == ("pt", "Bem-vindo, Ana!")
    assert (push["title"], push["link"]) == ("Hi Ana", "https://herald.test/start")
    assert "Ana" in push["body"]
    assert "30 minutes" in reset["text"]


async def test_seed_command_migrates_and_seeds(database_url: str, redis_prefix: str) -> None:
    env = {
        **os.environ,
        "TEMPLATE_DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": redis_prefix,
        "LOG_FORMAT": "json",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "template_service", "seed"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert await _counts(database_url) == (4, 4)
    # what the command created is recognised by the next run
    engine = create_engine(database_url, pool_size=1)
    try:
        again = await seed_demo_templates(session_factory(engine), None, SandboxRenderer(), "en")
    finally:
        await engine.dispose()
    assert again == []
