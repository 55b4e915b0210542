"""/metrics: open without METRICS_TOKEN (development), bearer-protected with it."""

from __future__ import annotations

import httpx
import pytest

from libs.http.app import create_app

pytestmark = pytest.mark.unit

TOKEN = "metrics-secret-for-tests-1"


def _client(metrics_token: str | None) -> httpx.AsyncClient:
    app = create_app(service="test", title="t", lifespan=None, metrics_token=metrics_token)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_metrics_are_open_without_a_configured_token():
    async with _client(None) as client:
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert "# HELP" in response.text


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_token"),
        ("Basic dXNlcjpwYXNz", "missing_token"),
        ("Bearer not-the-token", "invalid_token"),
        (f"Bearer {TOKEN}x", "invalid_token"),
    ],
)
async def test_metrics_need_the_token_when_one_is_configured(authorization, code):
    headers = {"Authorization": authorization} if authorization else {}
    async with _client(TOKEN) as client:
        response = await client.get("/metrics", headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == code
    assert "# HELP" not in response.text


async def test_metrics_answer_the_configured_bearer_token():
    async with _client(TOKEN) as client:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        health = await client.get("/health")  # probes stay open

    assert response.status_code == 200
    assert "# HELP" in response.text
    assert health.status_code == 200
