"""Firebase Cloud Messaging through its HTTP v1 API (aiohttp + google-auth).

Why not firebase-admin's ``messaging.send_each_async``: its HTTP client retries 5xx by itself (up to
four times, hidden from our retry and breaker accounting), refreshes OAuth tokens with blocking
``requests`` calls inside the event loop, and its endpoint is a private class constant. Here the
endpoint is a setting, each send is one HTTP request, and the token refresh (about hourly) runs in a
worker thread. See docs/decisions.md.

Why aiohttp and not the httpx client the services use between themselves: at push_service's 50
sends in flight, httpx spent about 3.7 ms of CPU per request on this project's 2-core machine
(half of it its pool checking every idle connection on each request), aiohttp 0.3-0.4 ms. The
provider keeps its own connection pool, as many connections as sends in flight.

Classification (FCM's documented error codes):
- 200: sent; 404 UNREGISTERED / 403 SENDER_ID_MISMATCH: the token is dead -> prune.
- 400 INVALID_ARGUMENT: permanent (a dead token when the message says so).
- 429 QUOTA_EXCEEDED, 500 INTERNAL, 503 UNAVAILABLE: transient, honouring Retry-After.
- 401: the access token is refreshed once, then the error is transient.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import google.auth.transport.requests
import orjson
import structlog
from google.oauth2 import service_account

from libs.delivery.providers import (
    Commit,
    OutcomeUnknown,
    PermanentProviderError,
    RecipientGone,
    SendResult,
    TransientProviderError,
)

log = structlog.get_logger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def load_service_account(
    credentials_file: str | None, credentials_json: str | None
) -> dict[str, Any] | None:
    if credentials_json:
        return dict(json.loads(credentials_json))
    if credentials_file:
        return dict(json.loads(Path(credentials_file).read_text()))
    return None


class AccessTokens:
    """OAuth access tokens for FCM from a service account, refreshed before they expire."""

    def __init__(self, info: Mapping[str, Any]) -> None:
        self._credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            dict(info), scopes=[FCM_SCOPE]
        )
        self._lock = asyncio.Lock()

    async def token(self, *, force: bool = False) -> str:
        creds = self._credentials
        if not force and creds.valid:
            return str(creds.token)
        async with self._lock:
            if force or not creds.valid:
                request = google.auth.transport.requests.Request()
                try:
                    await asyncio.to_thread(creds.refresh, request)
                except Exception as exc:  # google-auth raises several unrelated types
                    raise TransientProviderError(
                        "fcm", f"OAuth token refresh failed: {exc}", code="auth_error"
                    ) from exc
            return str(creds.token)


class FcmResponse:
    """What the provider reads of an answer: status, Retry-After, the JSON body if it is one."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """``headers``: aiohttp's, whose keys are case-insensitive."""
        self.status = status
        self.retry_after = headers.get("retry-after")
        self.body = body

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (ValueError when it is not one)."""
        value = orjson.loads(self.body)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value


def _retry_after_ms(response: FcmResponse) -> int:
    value = response.retry_after
    try:
        return max(0, int(float(value) * 1000)) if value else 0
    except ValueError:
        return 0


def _fcm_error(response: FcmResponse) -> tuple[str, str]:
    """(errorCode or status, message) from an FCM error body."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return str(response.status), response.body[:200].decode(errors="replace")
    if not isinstance(error, dict):
        return str(response.status), str(error)[:200]
    code = str(error.get("status") or response.status)
    for detail in error.get("details", []):
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = str(detail["errorCode"])
    return code, str(error.get("message", ""))


# Idle connections are dropped by us before a server would drop them (uvicorn: 5 s).
KEEPALIVE_SECONDS = 4.0


class FcmProvider:
    """``max_connections``: sends in flight at once (the consumer's prefetch is the natural
    value). ``session``: for tests; by default the provider opens its own and closes it."""

    def __init__(
        self,
        *,
        project_id: str,
        base_url: str,
        tokens: AccessTokens,
        timeout: float = 10.0,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        name: str = "fcm",
    ) -> None:
        self.name = name
        self._url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self._tokens = tokens
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._max_connections = max_connections
        self._session = session
        self._owns_session = session is None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # opened on first use: it needs the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, keepalive_timeout=KEEPALIVE_SECONDS
                ),
            )
        return self._session

    async def send(self, payload: dict[str, Any], commit: Commit | None = None) -> SendResult:
        """``commit`` is not used: an HTTP request has no point of no return we can mark."""
        body = orjson.dumps({"message": payload})
        for attempt in (1, 2):
            token = await self._tokens.token(force=attempt == 2)
            response = await self._post(body, token)
            if response.status == 401 and attempt == 1:
                continue
            return self._result(response)
        raise AssertionError("unreachable")

    async def _post(self, body: bytes, token: str) -> FcmResponse:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            async with self._http().post(
                # a 3xx is an answer to classify, not a place to send the message again
                self._url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                return FcmResponse(response.status, response.headers, await response.read())
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            # nothing was sent: another try cannot make a duplicate
            raise TransientProviderError(
                self.name, f"{type(exc).__name__}: {exc}", code="connection_error"
            ) from exc
        except TimeoutError as exc:
            # the request went out and no answer came in time: FCM may have delivered it
            raise OutcomeUnknown(self.name, f"no response in time: {exc!r}") from exc
        except aiohttp.ClientError as exc:
            raise TransientProviderError(
                self.name, f"{type(exc).__name__}: {exc}", code="connection_error"
            ) from exc

    def _result(self, response: FcmResponse) -> SendResult:
        status = response.status
        if status == 200:
            try:
                name = str(response.json().get("name", ""))
            except ValueError:
                name = ""  # sent (200); only the message id is unreadable
            return SendResult(self.name, name or None)
        code, message = _fcm_error(response)
        text = f"{status} {code}: {message}"
        if code in ("UNREGISTERED", "SENDER_ID_MISMATCH") or status == 404:
            raise RecipientGone(self.name, text, code="unregistered")
        if status == 429 or status >= 500 or status == 401:
            raise TransientProviderError(
                self.name, text, code=code.lower(), retry_after_ms=_retry_after_ms(response)
            )
        if code == "INVALID_ARGUMENT" and "registration token" in message.lower():
            raise RecipientGone(self.name, text, code="invalid_token")
        raise PermanentProviderError(self.name, text, code=code.lower())

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
