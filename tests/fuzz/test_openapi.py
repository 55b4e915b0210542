"""schemathesis against every service's OpenAPI: generated requests (valid and not), sent in-process
with real credentials, must never get a 500 and every documented response must match its schema.

Each operation is a test of its own (``test_<service>[METHOD /path]``). Its examples are bounded
(``HERALD_FUZZ_EXAMPLES``, default 15 per operation, half valid and half not) and the same on
every run; each example is sent once per kind of caller that may use the service.

(Schemathesis's own pytest integration is not used: with pytest 9 its lazy schemas fail on a
private attribute pytest no longer has. The strategies and checks are the same.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python import asgi

from devtools.fcm_stub import service_account
from dlq_service.app import create_app as create_dlq
from dlq_service.config import MIGRATIONS_DIR as DLQ_MIGRATIONS
from dlq_service.config import DlqSettings
from email_service.app import create_app as create_email
from email_service.config import EmailSettings
from gateway.app import create_app as create_gateway
from gateway.config import MIGRATIONS_DIR as GATEWAY_MIGRATIONS
from gateway.config import GatewaySettings
from libs.storage.db import upgrade
from push_service.app import create_app as create_push
from push_service.config import PushSettings
from template_service.__main__ import MIGRATIONS as TEMPLATE_MIGRATIONS
from template_service.app import create_app as create_templates
from template_service.config import TemplateSettings
from tests.fuzz.conftest import CHECKS, FUZZ
from tests.support.tokens import TokenMint
from tests.user_service.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_settings
from user_service.app import create_app as create_users
from user_service.cli import migrate, seed

pytestmark = pytest.mark.fuzz

Callers = list[dict[str, str]]


def operations(create_app: Callable[[], FastAPI]) -> list[Any]:
    """One pytest parameter per operation of the app's OpenAPI (read without starting it)."""
    schema = schemathesis.openapi.from_dict(create_app().openapi())
    found: list[Any] = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    return [pytest.param(operation, id=operation.label) for operation in found]


def fuzz(operation: Any, app: FastAPI, callers: Callers) -> None:
    """Send ``operation``'s generated requests to ``app`` as each caller; check every answer."""
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @FUZZ
    @given(case=cases)
    def run(case: Any) -> None:
        for headers in callers:
            case.call_and_validate(app=app, headers=headers, checks=CHECKS)

    run()


@pytest.fixture(scope="module")
def shared(module_prefix, module_amqp, jwks_url) -> dict[str, str]:
    """Settings of every service under fuzz: its Redis prefix, its vhost, the JWKS stand-in."""
    return {
        "redis_key_prefix": module_prefix,
        "rabbitmq_url": module_amqp,
        "user_service_url": jwks_url,
        "template_service_url": jwks_url,
    }


async def _migrated(databases, label: str, migrations: Path) -> str:
    database: str = await databases(label)
    await asyncio.to_thread(upgrade, migrations, database)
    return database


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------------------------------------
# gateway: as an admin and as a client backend


@pytest.fixture(scope="module")
async def gateway_app(databases, shared, running_apps) -> FastAPI:
    database = await _migrated(databases, "gateway", GATEWAY_MIGRATIONS)
    settings = GatewaySettings(
        database_url=database, verify_references=False, publish_confirm_timeout_seconds=2, **shared
    )
    return create_gateway(settings)


@pytest.fixture(scope="module")
def gateway_callers(mint: TokenMint) -> Callers:
    return [mint.headers("admin"), mint.headers("client")]


@pytest.mark.parametrize("operation", operations(create_gateway))
def test_gateway(operation, gateway_app, gateway_callers):
    fuzz(operation, gateway_app, gateway_callers)


# ---------------------------------------------------------------------------------------------
# user_service: as an admin and as a client backend (its own database, real logins)


@pytest.fixture(scope="module")
async def users_app(databases, module_prefix, running_apps) -> FastAPI:
    database = await databases("users")
    await asyncio.to_thread(migrate, database)
    settings = make_settings(database, module_prefix)
    await seed(settings)
    return create_users(settings)


@pytest.fixture(scope="module")
def users_callers(users_app) -> Callers:
    with asgi.get_client(users_app) as http:
        login = http.post(
            "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        admin = _bearer(login.json()["data"]["access_token"])
        created = http.post("/api/v1/clients/", json={"name": "fuzz"}, headers=admin).json()
        exchanged = http.post(
            "/api/v1/auth/token",
            json={
                "grant_type": "client_credentials",
                "client_id": created["data"]["id"],
                "client_secret": created["data"]["client_secret"],
            },
        )
    return [admin, _bearer(exchanged.json()["data"]["access_token"])]


@pytest.mark.parametrize("operation", operations(create_users))
def test_user_service(operation, users_app, users_callers):
    fuzz(operation, users_app, users_callers)


# ---------------------------------------------------------------------------------------------
# template_service: as an admin


@pytest.fixture(scope="module")
async def templates_app(databases, shared, running_apps) -> FastAPI:
    database = await _migrated(databases, "templates", TEMPLATE_MIGRATIONS)
    return create_templates(TemplateSettings(database_url=database, **shared))


@pytest.mark.parametrize("operation", operations(create_templates))
def test_template_service(operation, templates_app, mint):
    fuzz(operation, templates_app, [mint.headers("admin")])


# ---------------------------------------------------------------------------------------------
# dlq_service: as an admin


@pytest.fixture(scope="module")
async def dlq_app(databases, shared, running_apps) -> FastAPI:
    database = await _migrated(databases, "dlq", DLQ_MIGRATIONS)
    return create_dlq(DlqSettings(database_url=database, **shared))


@pytest.mark.parametrize("operation", operations(create_dlq))
def test_dlq_service(operation, dlq_app, mint):
    fuzz(operation, dlq_app, [mint.headers("admin")])


# ---------------------------------------------------------------------------------------------
# email_service and push_service: health, readiness and metrics only


@pytest.fixture(scope="module")
def email_app(shared, running_apps) -> FastAPI:
    return create_email(EmailSettings(smtp_host="127.0.0.1", smtp_port=1, **shared))


@pytest.fixture(scope="module")
def push_app(shared, running_apps) -> FastAPI:
    account = service_account("http://127.0.0.1:1/token")
    settings = PushSettings(
        fcm_base_url="http://127.0.0.1:1", fcm_credentials_json=json.dumps(account), **shared
    )
    return create_push(settings)


@pytest.mark.parametrize("operation", operations(create_email))
def test_email_service(operation, email_app):
    fuzz(operation, email_app, [{}])


@pytest.mark.parametrize("operation", operations(create_push))
def test_push_service(operation, push_app):
    fuzz(operation, push_app, [{}])
