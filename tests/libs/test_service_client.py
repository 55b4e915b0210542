"""Calls to our own services (libs.clients.http) over a real socket: each kind of answer, or
no answer, becomes the error the consumers' retry decisions rely on."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from libs.clients.errors import UpstreamNotFound, UpstreamRejected, UpstreamUnavailable
from libs.clients.http import ServiceClient, ServiceTokenProvider
from tests.support.servers import free_port, live_server


def upstream() -> tuple[FastAPI, dict[str, Any]]:
    seen: dict[str, Any] = {"logins": 0, "tokens": [], "expires_in": 900, "busy": False}
    app = FastAPI()

    @app.post("/api/v1/auth/login", response_model=None)
    async def login() -> dict[str, Any] | Response:
        seen["logins"] += 1
        if seen["busy"]:
            body = {"error": "busy", "message": "Too many password checks at once"}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        expires_in = seen["expires_in"]
        return {"data": {"access_token": f"token-{seen['logins']}", "expires_in": expires_in}}

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


async def test_a_token_that_cannot_be_renewed_is_used_until_shortly_before_it_expires():
    """user_service busy when renewal starts (at 80 % of the lifetime): the current token still
    serves, renewal is retried, and once the token is about to expire the failure shows."""
    app, seen = upstream()
    seen["expires_in"] = 4  # renewal from 3.2 s; usable until 3.6 s (a tenth of margin)
    async with live_server(app, port=free_port()) as url, aiohttp.ClientSession() as http:
        tokens = ServiceTokenProvider(http, url, "svc@example.com", "secret")
        first = await tokens.token()
        await asyncio.sleep(3.3)
        seen["busy"] = True

        assert await tokens.token() == first  # renewal refused: the token still serves
        assert await tokens.token() == first  # without a login attempt per call
        assert seen["logins"] == 2
        await asyncio.sleep(0.4)
        with pytest.raises(UpstreamUnavailable, match="503"):
            await tokens.token()

        seen["busy"] = False
        assert await tokens.token() == "token-4"
