"""The send route served hot (libs/http/hot.py) answers exactly as its FastAPI declaration does.

Two gateways on one stack: the app as it runs (the hot route first) and the same app with the
hot route taken out, so FastAPI's own route answers. Every request below, good or bad, gets the
same status, error code, message, details and headers from both.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from gateway.app import create_app
from gateway.endpoints import HOT_ROUTES
from tests.gateway.test_send import body
from tests.support.servers import app_client

JSON = {"Content-Type": "application/json"}


def _cases() -> list[Any]:
    valid = json.dumps(body(request_id="fixed")).encode()
    fields = json.dumps(body(notification_type="sms", priority=99, user_id="nope")).encode()
    return [
        pytest.param(JSON, b"", id="no-body"),
        pytest.param(JSON, b'{"notification_type": "email", ', id="invalid-json"),
        pytest.param(JSON, b"\xff\xfe\x00{", id="not-utf8"),
        pytest.param(JSON, b"[1, 2]", id="an-array"),
        pytest.param(JSON, b"{}", id="empty-object"),
        pytest.param(JSON, b'"just a string"', id="a-string"),
        pytest.param(JSON, b'{"priority": NaN}', id="nan"),
        pytest.param(JSON, fields, id="bad-fields"),
        pytest.param({}, valid, id="no-content-type"),
        pytest.param({"Content-Type": "text/plain"}, valid, id="text-plain"),
        pytest.param({"Content-Type": "application/vnd.herald+json"}, valid, id="vendor-json"),
        pytest.param({"Content-Type": "application/json; charset=utf-8"}, valid, id="charset"),
    ]


def _answer(response: Any) -> tuple[Any, ...]:
    envelope = response.json()
    data = envelope.get("data")
    if response.status_code == 202:  # a new notification: its id and time are its own
        data = sorted(data)
    headers = {k: v for k, v in response.headers.items() if k not in ("x-correlation-id",)}
    headers.pop("content-length", None)
    return response.status_code, envelope.get("error"), envelope.get("message"), data, headers


@pytest.fixture
async def both(gateway_settings):
    hot = create_app(gateway_settings)
    declared = create_app(gateway_settings)
    declared.router.routes[:] = [r for r in declared.router.routes if r not in HOT_ROUTES]
    async with app_client(hot) as hot_client, app_client(declared) as declared_client:
        yield hot_client, declared_client


@pytest.mark.parametrize(("headers", "content"), _cases())
@pytest.mark.parametrize("token", ["valid", "none"])
async def test_the_hot_route_answers_as_fastapi_would(both, mint, headers, content, token):
    hot, declared = both
    auth = mint.headers() if token == "valid" else {}
    answers = []
    for client in (hot, declared):
        # each its own request id where the body is valid: the second would be a replay
        sent = content.replace(b'"fixed"', f'"{uuid.uuid4().hex}"'.encode())
        answers.append(
            _answer(
                await client.post("/api/v1/notifications/", content=sent, headers=headers | auth)
            )
        )
    assert answers[0] == answers[1]


async def test_the_hot_route_comes_first_and_the_openapi_still_documents_it(
    gateway_settings, gateway
):
    app = create_app(gateway_settings)
    assert app.router.routes[0] is HOT_ROUTES[0]
    spec = (await gateway.get("/openapi.json")).json()
    operation = spec["paths"]["/api/v1/notifications/"]["post"]
    assert "NotificationRequest" in json.dumps(operation["requestBody"])
    assert set(operation["responses"]) >= {"202", "409", "422", "429", "503"}
