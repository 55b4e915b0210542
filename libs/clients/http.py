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
    """Obtains this service's ``service`` token from user_service and renews it before expiry.

    Renewal starts at 80 % of the token's lifetime. If user_service cannot give a new one then
    (down, or 503 ``busy`` under a flood of logins), the current token is used until shortly
    before it expires, and renewal is tried again every few seconds: a short outage of
    user_service delays no delivery that the token still covers.
    """

    RETRY_RENEWAL_SECONDS = 5.0

    def __init__(
        self, http: aiohttp.ClientSession, user_service_url: str, email: str, password: str
    ) -> None:
        self._http = http
        self._url = f"{user_service_url.rstrip('/')}/api/v1/auth/login"
        self._email = email
        self._password = password
        self._token: str | None = None
        self._renew_at = 0.0
        self._usable_until = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token and time.monotonic() < self._renew_at:
            return self._token
        async with self._lock:
            if self._token and time.monotonic() < self._renew_at:
                return self._token
            try:
                return await self._login()
            except UpstreamUnavailable as exc:
                now = time.monotonic()
                if self._token is None or now >= self._usable_until:
                    raise
                self._renew_at = min(now + self.RETRY_RENEWAL_SECONDS, self._usable_until)
                log.warning(
                    "service_token.renewal_failed",
                    error=str(exc),
                    still_valid_seconds=round(self._usable_until - now, 1),
                )
                return self._token

    async def _login(self) -> str:
        login = {"email": self._email, "password": self._password}
        try:
            status, _reason, body = await _call(
                self._http, "POST", self._url, login, correlation_headers()
            )
        except UpstreamUnavailable as exc:
            raise UpstreamUnavailable("user_service", f"login failed: {exc}") from exc
        if status != 200:
            raise UpstreamUnavailable("user_service", f"service login answered {status}", status)
        data = body["data"]
        token = str(data["access_token"])
        lifetime = float(data.get("expires_in", 900))
        now = time.monotonic()
        self._token = token
        self._renew_at = now + max(lifetime * 0.8, lifetime - 60)
        # a margin for the time the answer took and for clocks: a tenth, at most 30 s
        self._usable_until = now + lifetime - min(lifetime * 0.1, 30.0)
        return token

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
