"""Authenticated JSON calls to another service, with the error mapping consumers rely on."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from libs.clients.errors import UpstreamNotFound, UpstreamRejected, UpstreamUnavailable
from libs.logging import correlation_headers
from libs.settings import ServiceSettings

log = structlog.get_logger(__name__)


class ServiceTokenProvider:
    """Obtains this service's ``service`` token from user_service and renews it before expiry."""

    def __init__(
        self, http: httpx.AsyncClient, user_service_url: str, email: str, password: str
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
            try:
                response = await self._http.post(
                    self._url,
                    json={"email": self._email, "password": self._password},
                    headers=correlation_headers(),
                )
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable("user_service", f"login failed: {exc!r}") from exc
            if response.status_code != 200:
                raise UpstreamUnavailable(
                    "user_service",
                    f"service login answered {response.status_code}",
                    response.status_code,
                )
            data = response.json()["data"]
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
        http: httpx.AsyncClient,
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
            try:
                response = await self._http.request(
                    method, f"{self._base}{path}", json=json, headers=headers
                )
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
            if response.status_code == 401 and self._tokens is not None and attempt == 1:
                self._tokens.invalidate()  # our token expired or its key was rotated away
                continue
            return self._data_or_raise(response)
        raise AssertionError("unreachable")

    def _data_or_raise(self, response: httpx.Response) -> Any:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {}
        if 200 <= status < 300:
            return body.get("data")
        message = str(body.get("message") or response.reason_phrase)
        if status == 404:
            raise UpstreamNotFound(self.name, message, status)
        if status in (401, 408, 429) or status >= 500:
            raise UpstreamUnavailable(self.name, f"{status} {message}", status)
        raise UpstreamRejected(self.name, message, status, code=body.get("error"))


@dataclass(frozen=True)
class OwnServices:
    """Clients of user_service and template_service, sharing this service's one token."""

    user_service: ServiceClient
    template_service: ServiceClient


def own_services(settings: ServiceSettings, http: httpx.AsyncClient) -> OwnServices:
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
