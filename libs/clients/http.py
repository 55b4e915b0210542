"""Authenticated JSON calls to another service, with the error mapping consumers rely on.

Over aiohttp rather than httpx: with a consumer's dozens of messages in flight, httpx spent about
ten times aiohttp's CPU per request on this project's machines (its pool checks every idle
connection on each request); these calls were a fifth of email_service's and push_service's CPU.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog

from libs.clients.errors import UpstreamNotFound, UpstreamRejected, UpstreamUnavailable
from libs.logging import correlation_headers
from libs.settings import ServiceSettings

log = structlog.get_logger(__name__)


class ServiceTokenProvider:
    """Obtains this service's ``service`` token from user_service and renews it before expiry."""

    def __init__(
        self, http: aiohttp.ClientSession, user_service_url: str, email: str, password: str
    ) -> None:
        self._http = http
        self._url = f"{user_service_url.rstrip('/')}/api/v1/auth/login"
        self._email = email
        self._password = password
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token and time.monotonic() < self._renew_at:
            return self._token
        async with self._lock:
            if self._token and time.monotonic() < self._renew_at:
                return self._token
            login = {"email": self._email, "password": self._password}
            try:
                status, _reason, body = await _call(
                    self._http, "POST", self._url, login, correlation_headers()
                )
            except UpstreamUnavailable as exc:
                raise UpstreamUnavailable("user_service", f"login failed: {exc}") from exc
            if status != 200:
                raise UpstreamUnavailable(
                    "user_service", f"service login answered {status}", status
                )
            data = body["data"]
            self._token = str(data["access_token"])
            lifetime = float(data.get("expires_in", 900))
            self._renew_at = time.monotonic() + max(lifetime * 0.8, lifetime - 60)
            return self._token

    def invalidate(self) -> None:
        self._token = None


class ServiceClient:
    """JSON over HTTP to one service, authenticated with the service token."""

    def __init__(
        self,
        name: str,
        base_url: str,
        http: aiohttp.ClientSession,
        tokens: ServiceTokenProvider | None,
    ) -> None:
        self.name = name
        self._base = base_url.rstrip("/")
        self._http = http
        self._tokens = tokens

    async def request(self, method: str, path: str, json: Any = None) -> Any:
        """Return the envelope's ``data``; raise an :class:`UpstreamError` subclass otherwise."""
        for attempt in (1, 2):
            headers = correlation_headers()
            if self._tokens is not None:
                headers["Authorization"] = f"Bearer {await self._tokens.token()}"
            status, reason, body = await _call(
                self._http, method, f"{self._base}{path}", json, headers, name=self.name
            )
            if status == 401 and self._tokens is not None and attempt == 1:
                self._tokens.invalidate()  # our token expired or its key was rotated away
                continue
            return self._data_or_raise(status, reason, body)
        raise AssertionError("unreachable")

    def _data_or_raise(self, status: int, reason: str, body: dict[str, Any]) -> Any:
        if 200 <= status < 300:
            return body.get("data")
        message = str(body.get("message") or reason)
        if status == 404:
            raise UpstreamNotFound(self.name, message, status)
        if status in (401, 408, 429) or status >= 500:
            raise UpstreamUnavailable(self.name, f"{status} {message}", status)
        raise UpstreamRejected(self.name, message, status, code=body.get("error"))


async def _call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    json: Any,
    headers: dict[str, str],
    *,
    name: str = "user_service",
) -> tuple[int, str, dict[str, Any]]:
    """(status, reason, the body when it is a JSON object, else {}); a request that got no
    answer (refused, reset, timed out) is :class:`UpstreamUnavailable`."""
    if json is not None:
        headers["Content-Type"] = "application/json"
    try:
        async with http.request(
            method, url, data=None if json is None else orjson.dumps(json), headers=headers
        ) as response:
            status, reason, raw = response.status, response.reason or "", await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamUnavailable(name, f"{type(exc).__name__}: {exc}") from exc
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = {}
    return status, reason, body if isinstance(body, dict) else {}


@dataclass(frozen=True)
class OwnServices:
    """Clients of user_service and template_service, sharing this service's one token."""

    user_service: ServiceClient
    template_service: ServiceClient


def own_services(settings: ServiceSettings, http: aiohttp.ClientSession) -> OwnServices:
    tokens = ServiceTokenProvider(
        http,
        settings.user_service_url,
        settings.service_account_email,
        settings.service_account_password,
    )
    return OwnServices(
        ServiceClient("user_service", settings.user_service_url, http, tokens),
        ServiceClient("template_service", settings.template_service_url, http, tokens),
    )
