from __future__ import annotations

import asyncio

import pytest
from aio_pika import connect_robust

from gateway.app import create_app
from gateway.config import MIGRATIONS_DIR, GatewaySettings
from libs.storage.db import upgrade
from tests.support.servers import app_client
from tests.support.tokens import TokenMint, jwks_server


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
async def jwks_url(mint):
    async with jwks_server(mint) as url:
        yield url


@pytest.fixture
async def gateway_database_url(database_url):
    """A fresh database with the gateway's migrations (the notification history) applied."""
    await asyncio.to_thread(upgrade, MIGRATIONS_DIR, database_url)
    return database_url


@pytest.fixture
def gateway_settings(amqp_url, redis_prefix, jwks_url, gateway_database_url) -> GatewaySettings:
    return GatewaySettings(
        rabbitmq_url=amqp_url,
        redis_key_prefix=redis_prefix,
        database_url=gateway_database_url,
        user_service_url=jwks_url,
        template_service_url=jwks_url,
        verify_references=False,
        publish_confirm_timeout_seconds=2,
    )


@pytest.fixture
async def gateway(gateway_settings):
    async with app_client(create_app(gateway_settings)) as client:
        yield client


@pytest.fixture
async def amqp(amqp_url):
    connection = await connect_robust(amqp_url)
    yield connection
    await connection.close()
