"""SQLAlchemy's errors in the envelope, and only where a service has a database.

The services without one (email_service, push_service) leave SQLAlchemy out altogether: importing
it is half a second of CPU at each of their starts (six processes share two cores at ``make run``).
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy.exc import DBAPIError, OperationalError

from libs.http.app import create_app

pytestmark = pytest.mark.unit


class _Unstorable(Exception):
    sqlstate = "22021"  # character_not_in_repertoire: a NUL in text


def _app(database: bool) -> httpx.AsyncClient:
    router = APIRouter()

    @router.get("/lost")
    async def lost() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    @router.get("/unstorable")
    async def unstorable() -> None:
        raise DBAPIError("INSERT ...", {}, _Unstorable())

    app = create_app(service="t", title="t", lifespan=None, routers=[router], database=database)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://t",
    )


async def test_with_a_database_a_lost_postgresql_is_503_and_an_unstorable_value_422() -> None:
    async with _app(database=True) as client:
        lost = await client.get("/lost")
        unstorable = await client.get("/unstorable")
    assert lost.status_code == 503
    assert lost.json()["error"] == "service_unavailable"
    assert lost.headers["retry-after"] == "5"
    assert unstorable.status_code == 422
    assert unstorable.json()["error"] == "invalid_value"


async def test_without_one_its_errors_are_unexpected() -> None:
    async with _app(database=False) as client:
        lost = await client.get("/lost")
    assert lost.status_code == 500
    assert lost.json()["error"] == "internal_error"


@pytest.mark.parametrize("service", ["email_service", "push_service"])
def test_a_service_without_a_database_does_not_import_sqlalchemy(service: str) -> None:
    probe = (
        f"import sys, {service}.__main__, {service}.app\n"
        f"{service}.app.create_app()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'sqlmodel', 'alembic', 'asyncpg')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
