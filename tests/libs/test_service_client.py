"""Calls to our own services (libs.clients.http) over a real socket: each kind of answer, or
no answer, becomes the error the consumers' retry decisions rely on."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from libs.clients.errors import UpstreamNotFound, UpstreamRejected, UpstreamUnavailable
from libs.clients.http import ServiceClient, ServiceTokenProvider
from tests.support.servers import free_port, live_server


def upstream() -> tuple[FastAPI, dict[str, Any]]:
    seen: dict[str, Any] = {"logins": 0, "tokens": []}
    app = FastAPI()

    @app.post("/api/v1/auth/login")
    async def login() -> dict[str, Any]:
        seen["logins"] += 1
        return {"data": {"access_token": f"token-{seen['logins']}", "expires_in": 900}}

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        seen["tokens"].append(request.headers.get("authorization"))
        if request.headers.get("authorization") == "Bearer token-1":
            return JSONResponse({"message": "expired"}, status_code=401)
        return JSONResponse({"data": await request.json()})

    @app.get("/missing")
    async def missing() -> Response:
        return JSONResponse({"message": "No such user."}, status_code=404)

    @app.get("/refused")
    async def refused() -> Response:
        body = {"error": "validation_error", "message": "bad id"}
        return JSONResponse(body, status_code=422)

    @app.get("/proxy-error")
    async def proxy_error() -> Response:
        return Response("<html>bad gateway</html>", status_code=502, media_type="text/html")

    return app, seen


async def test_answers_map_to_data_or_to_the_error_a_consumer_decides_on():
    app, seen = upstream()
    async with live_server(app, port=free_port()) as url, aiohttp.ClientSession() as http:
        tokens = ServiceTokenProvider(http, url, "svc@example.com", "secret")
        client = ServiceClient("user_service", url, http, tokens)

        # the first token is refused (expired): one new login, the call repeated once
        assert await client.request("POST", "/echo", json={"ids": ["a"]}) == {"ids": ["a"]}
        assert seen["logins"] == 2
        assert seen["tokens"] == ["Bearer token-1", "Bearer token-2"]

        with pytest.raises(UpstreamNotFound, match="No such user"):
            await client.request("GET", "/missing")
        with pytest.raises(UpstreamRejected) as rejected:
            await client.request("GET", "/refused")
        assert (rejected.value.status, rejected.value.code) == (422, "validation_error")
        with pytest.raises(UpstreamUnavailable) as unavailable:  # not JSON: its status decides
            await client.request("GET", "/proxy-error")
        assert unavailable.value.status == 502


async def test_a_service_that_does_not_answer_is_unavailable_never_an_error_of_the_message():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        client = ServiceClient("template_service", f"http://127.0.0.1:{free_port()}", http, None)
        with pytest.raises(UpstreamUnavailable):
            await client.request("POST", "/api/v1/renders", json={"items": []})
        tokens = ServiceTokenProvider(http, f"http://127.0.0.1:{free_port()}", "a@b.c", "x")
        with pytest.raises(UpstreamUnavailable, match="login failed"):
            await tokens.token()
