"""Commands behind ``python -m user_service``: migrate, seed, keys."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from libs.http.auth import Role
from libs.http.errors import AppError
from libs.logging import configure_logging
from libs.storage import db
from user_service import repository
from user_service.config import UserSettings
from user_service.models import SigningKey, utcnow
from user_service.security import (
    PasswordHasher,
    key_status,
    retire_signing_key,
    rotate_signing_key,
)
from user_service.service import UserService

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

KEYS_USAGE = "usage: python -m user_service keys rotate | list | retire <kid>"


class SeedConflict(Exception):
    """A configured account's email belongs to an account with another role."""


def migrate(url: str) -> None:
    """Create the database if needed and apply every migration (blocking)."""
    db.upgrade(MIGRATIONS_DIR, url)


@asynccontextmanager
async def _sessions(settings: UserSettings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(settings.database_url, pool_size=2)
    try:
        yield db.session_factory(engine)
    finally:
        await engine.dispose()


async def seed(settings: UserSettings) -> list[dict[str, str]]:
    """Create the admin and the service account if missing (idempotent).

    The admin's password is only set at creation (an admin may change it later). The service
    account's password is configuration that other services log in with, so it is brought back
    in line with ``SERVICE_ACCOUNT_PASSWORD`` when it differs. An existing account with another
    role is never promoted: that would hand a role to whoever registered the address first.
    """
    hasher = PasswordHasher(settings)
    accounts = (
        ("Administrator", settings.admin_email, settings.admin_password, Role.ADMIN, False),
        (
            "Service account",
            settings.service_account_email,
            settings.service_account_password,
            Role.SERVICE,
            True,
        ),
    )
    report: list[dict[str, str]] = []
    async with _sessions(settings) as sessions, sessions() as session, session.begin():
        users = UserService(session, settings, hasher)
        for name, email, password, role, sync_password in accounts:
            existing = await repository.get_user_by_email(session, email)
            if existing is None:
                await users.create_account(name=name, email=email, password=password, role=role)
                outcome = "created"
            elif existing.role != role.value:
                raise SeedConflict(
                    f"{email} exists with role {existing.role!r}, not {role.value!r}; "
                    "resolve it by hand"
                )
            elif sync_password and not await hasher.verify(existing.password_hash, password):
                existing.password_hash = await hasher.hash(password)
                existing.updated_at = utcnow()
                session.add(existing)
                outcome = "password updated"
            else:
                outcome = "exists"
            report.append({"email": email.lower(), "role": role.value, "outcome": outcome})
    return report


def _key_row(key: SigningKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "status": key_status(key, utcnow()),
        "created_at": key.created_at.isoformat(),
        "activated_at": key.activated_at.isoformat() if key.activated_at else None,
        "retired_at": key.retired_at.isoformat() if key.retired_at else None,
    }


async def keys(settings: UserSettings, args: Sequence[str]) -> list[dict[str, Any]]:
    """``rotate``, ``list`` or ``retire <kid>``; returns the rows to print."""
    action, *rest = args or ("",)
    async with _sessions(settings) as sessions, sessions() as session, session.begin():
        if action == "list" and not rest:
            return [_key_row(key) for key in await repository.all_signing_keys(session)]
        if action == "rotate" and not rest:
            return [_key_row(await rotate_signing_key(session, settings))]
        if action == "retire" and len(rest) == 1:
            return [_key_row(await retire_signing_key(session, rest[0]))]
    raise SystemExit(KEYS_USAGE)


def _print_rows(rows: Sequence[dict[str, Any]]) -> None:
    for row in rows:
        sys.stdout.write(json.dumps(row) + "\n")


def _settings() -> UserSettings:
    """Settings for a command; logs go to stderr so stdout carries only the JSON rows."""
    settings = UserSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    return settings


def run_migrate() -> None:
    migrate(_settings().database_url)


def run_seed() -> None:
    try:
        _print_rows(asyncio.run(seed(_settings())))
    except SeedConflict as exc:
        raise SystemExit(f"seed: {exc}") from exc
    except (SQLAlchemyError, OSError) as exc:
        raise SystemExit(f"seed: database unavailable or not migrated: {exc}") from exc


def run_keys() -> None:
    try:
        _print_rows(asyncio.run(keys(_settings(), sys.argv[2:])))
    except AppError as exc:
        raise SystemExit(f"keys: {exc.message}") from exc
    except (SQLAlchemyError, OSError) as exc:
        raise SystemExit(f"keys: database unavailable or not migrated: {exc}") from exc
