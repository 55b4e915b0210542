"""``python -m user_service``: seed, keys and migrate, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from asyncio.subprocess import PIPE
from typing import Any

import pytest

from libs.http.auth import Role
from libs.storage.db import create_engine, session_factory
from tests.user_service.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    SERVICE_EMAIL,
    make_settings,
)
from user_service import cli, repository
from user_service.cli import SeedConflict, run_keys, run_migrate, run_seed, seed
from user_service.security import PasswordHasher
from user_service.service import UserService

FAST_ENV = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "1024", "ARGON2_PARALLELISM": "1"}


async def _run(database_url: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    env = {**os.environ, "USER_DATABASE_URL": database_url, **FAST_ENV}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "user_service", *args, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await process.communicate()
    rows = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert process.returncode is not None
    return process.returncode, rows, err.decode()


async def _password_matches(settings, email: str, password: str) -> bool:
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            user = await repository.get_user_by_email(session, email)
    finally:
        await engine.dispose()
    assert user is not None
    return await PasswordHasher(settings).verify(user.password_hash, password)


async def test_seed_creates_the_accounts_once(migrated_url, redis_prefix):
    settings = make_settings(migrated_url, redis_prefix)

    first = await seed(settings)
    second = await seed(settings)

    assert [(r["email"], r["role"], r["outcome"]) for r in first] == [
        (ADMIN_EMAIL, "admin", "created"),
        (SERVICE_EMAIL, "service", "created"),
    ]
    assert [r["outcome"] for r in second] == ["exists", "exists"]


async def test_seed_follows_the_configured_service_password_but_keeps_the_admins(
    migrated_url, redis_prefix
):
    await seed(make_settings(migrated_url, redis_prefix))
    changed = make_settings(
        migrated_url,
        redis_prefix,
        admin_password="another-admin-pw-1",
        service_account_password="rotated-service-pw-2",
    )

    report = await seed(changed)

    assert [r["outcome"] for r in report] == ["exists", "password updated"]
    assert await _password_matches(changed, SERVICE_EMAIL, "rotated-service-pw-2")
    assert await _password_matches(changed, ADMIN_EMAIL, ADMIN_PASSWORD)


async def test_seed_never_promotes_an_existing_account(migrated_url, redis_prefix):
    settings = make_settings(migrated_url, redis_prefix)
    engine = create_engine(migrated_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            users = UserService(session, settings, PasswordHasher(settings))
            await users.create_account(
                name="Squatter", email=ADMIN_EMAIL, password="squatter-pw-1", role=Role.USER
            )
    finally:
        await engine.dispose()

    with pytest.raises(SeedConflict):
        await seed(settings)


def _command(monkeypatch, database_url: str, command, *argv: str) -> None:
    """Run a ``python -m user_service`` command in-process, configured from the environment."""
    monkeypatch.setenv("USER_DATABASE_URL", database_url)
    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["user_service", *argv])
    # logging set-up is process-global (and would bind to pytest's captured streams)
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)
    command()


def _rows(capsys) -> list[dict[str, Any]]:
    # structlog's default (unconfigured here) also prints to stdout; keep the JSON rows
    out = capsys.readouterr().out.splitlines()
    return [json.loads(line) for line in out if line.startswith("{")]


async def test_cli_migrates_seeds_and_manages_keys(database_url, monkeypatch, capsys):
    def run(command, *argv: str) -> list[dict[str, Any]]:
        _command(monkeypatch, database_url, command, *argv)
        return _rows(capsys)

    # commands call asyncio.run themselves, hence a thread
    await asyncio.to_thread(run, run_migrate, "migrate")
    seeded = await asyncio.to_thread(run, run_seed, "seed")
    assert {row["email"] for row in seeded} == {ADMIN_EMAIL, SERVICE_EMAIL}

    first_kid = (await asyncio.to_thread(run, run_keys, "keys", "rotate"))[0]["kid"]
    second_kid = (await asyncio.to_thread(run, run_keys, "keys", "rotate"))[0]["kid"]
    listed = await asyncio.to_thread(run, run_keys, "keys", "list")
    assert [(row["kid"], row["status"]) for row in listed] == [
        (second_kid, "active"),
        (first_kid, "retiring"),
    ]
    assert "private" not in json.dumps(listed).lower()

    retired = await asyncio.to_thread(run, run_keys, "keys", "retire", first_kid)
    assert retired[0]["status"] == "retired"

    with pytest.raises(SystemExit, match="rotate first"):
        await asyncio.to_thread(run, run_keys, "keys", "retire", second_kid)
    with pytest.raises(SystemExit, match="usage"):
        await asyncio.to_thread(run, run_keys, "keys", "shred")

    # the real entry point prints only JSON rows on stdout (logs go to stderr)
    code, rows, _ = await _run(database_url, "keys", "list")
    assert code == 0
    assert [row["kid"] for row in rows] == [second_kid, first_kid]
