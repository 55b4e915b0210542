"""Without Redis the login throttle cannot be read: logins fail closed (503), never skip it."""

from __future__ import annotations

from tests.support.proxy import TcpProxy
from tests.support.servers import app_client
from tests.user_service.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    SERVICE_EMAIL,
    SERVICE_PASSWORD,
    bearer,
    login,
)
from user_service.app import create_app
from user_service.config import UserSettings


async def test_logins_and_client_tokens_fail_closed_while_redis_is_away(
    settings: UserSettings,
) -> None:
    proxy = await TcpProxy("127.0.0.1", 6379).start()
    url = settings.redis_url.replace("127.0.0.1:6379", f"127.0.0.1:{proxy.port}")
    assert url != settings.redis_url
    cut_settings = settings.model_copy(update={"redis_url": url})
    try:
        async with app_client(create_app(cut_settings)) as client:
            admin = bearer(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
            made = await client.post("/api/v1/clients/", json={"name": "shop"}, headers=admin)
            assert made.status_code == 201, made.text
            credentials = made.json()["data"]
            await proxy.cut()
            attempts = [
                await client.post(
                    "/api/v1/auth/login", json={"email": SERVICE_EMAIL, "password": password}
                )
                for password in ("wrong-guess-1", "wrong-guess-2", SERVICE_PASSWORD)
            ]
            exchange = await client.post(
                "/api/v1/auth/token",
                json={
                    "grant_type": "client_credentials",
                    "client_id": credentials["id"],
                    "client_secret": "hcs_wrong",
                },
            )
            # no guess is judged while the failures cannot be counted: no 401, no token
            for response in [*attempts, exchange]:
                assert response.status_code == 503, response.text
                assert response.json()["success"] is False
                assert response.json()["error"] == "service_unavailable"
            await proxy.restore()
            assert await login(client, SERVICE_EMAIL, SERVICE_PASSWORD)
    finally:
        await proxy.close()
