"""Firebase Cloud Messaging through its HTTP v1 API (httpx + google-auth).

Why not firebase-admin's ``messaging.send_each_async``: its HTTP client retries 5xx by itself (up to
four times, hidden from our retry and breaker accounting), refreshes OAuth tokens with blocking
``requests`` calls inside the event loop, and its endpoint is a private class constant. Here the
endpoint is a setting, each send is one HTTP request, and the token refresh (about hourly) runs in a
worker thread. See docs/decisions.md.

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

import google.auth.transport.requests
import httpx
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


def _retry_after_ms(response: httpx.Response) -> int:
    value = response.headers.get("retry-after")
    try:
        return max(0, int(float(value) * 1000)) if value else 0
    except ValueError:
        return 0


def _fcm_error(response: httpx.Response) -> tuple[str, str]:
    """(errorCode or status, message) from an FCM error body."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return str(response.status_code), response.text[:200]
    code = str(error.get("status") or response.status_code)
    for detail in error.get("details", []):
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = str(detail["errorCode"])
    return code, str(error.get("message", ""))


class FcmProvider:
    def __init__(
        self,
        *,
        project_id: str,
        base_url: str,
        tokens: AccessTokens,
        http: httpx.AsyncClient,
        timeout: float = 10.0,
        name: str = "fcm",
    ) -> None:
        self.name = name
        self._url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self._tokens = tokens
        self._http = http
        self._timeout = timeout

    async def send(self, payload: dict[str, Any], commit: Commit | None = None) -> SendResult:
        """``commit`` is not used: an HTTP request has no point of no return we can mark."""
        for attempt in (1, 2):
            token = await self._tokens.token(force=attempt == 2)
            try:
                response = await self._http.post(
                    self._url,
                    json={"message": payload},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=self._timeout,
                )
            except httpx.ReadTimeout as exc:
                # the request went out and no answer came: FCM may have delivered it
                raise OutcomeUnknown(self.name, f"no response in time: {exc!r}") from exc
            except httpx.HTTPError as exc:
                raise TransientProviderError(
                    self.name, f"{type(exc).__name__}: {exc}", code="connection_error"
                ) from exc
            if response.status_code == 401 and attempt == 1:
                continue
            return self._result(response)
        raise AssertionError("unreachable")

    def _result(self, response: httpx.Response) -> SendResult:
        status = response.status_code
        if status == 200:
            return SendResult(self.name, str(response.json().get("name", "")) or None)
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
        """The HTTP client belongs to the service and is closed there."""
