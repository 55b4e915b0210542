"""SendGrid's v3 Mail Send API (``POST /v3/mail/send``) as an email provider.

The base URL is a setting, so tests and development use a local server speaking the same API.
Classification: 202 sent; 429 and 5xx transient (Retry-After or X-RateLimit-Reset honoured);
401/403 transient for the message (a key problem: the breaker opens and the next provider takes
over); other 4xx permanent (SendGrid refused this message).
"""

from __future__ import annotations

import time
from email.utils import parseaddr
from typing import Any

import httpx

from email_service.providers import OutgoingEmail
from libs.delivery.providers import (
    Commit,
    OutcomeUnknown,
    PermanentProviderError,
    SendResult,
    TransientProviderError,
)


def sendgrid_body(email: OutgoingEmail) -> dict[str, Any]:
    from_name, from_address = parseaddr(email.sender)
    content = [{"type": "text/plain", "value": email.text or " "}]
    if email.html:
        content.append({"type": "text/html", "value": email.html})
    custom_args = {
        k.lower().removeprefix("x-").replace("-", "_"): v for k, v in email.headers.items()
    }
    return {
        "personalizations": [{"to": [{"email": email.to_address, "name": email.to_name}]}],
        "from": {"email": from_address, "name": from_name}
        if from_name
        else {"email": from_address},
        "subject": email.subject,
        "content": content,
        "headers": {"Message-ID": email.message_id, **email.headers},
        "custom_args": custom_args,
    }


def _retry_after_ms(response: httpx.Response) -> int:
    if value := response.headers.get("retry-after"):
        try:
            return int(float(value) * 1000)
        except ValueError:
            return 0
    if reset := response.headers.get("x-ratelimit-reset"):
        try:
            return max(0, int((float(reset) - time.time()) * 1000))
        except ValueError:
            return 0
    return 0


class SendGridProvider:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        http: httpx.AsyncClient,
        timeout: float = 10.0,
        name: str = "sendgrid",
    ) -> None:
        self.name = name
        self._url = f"{base_url.rstrip('/')}/v3/mail/send"
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._http = http
        self._timeout = timeout

    async def send(self, payload: OutgoingEmail, commit: Commit | None = None) -> SendResult:
        """``commit`` is not used: an HTTP request has no point of no return we can mark."""
        try:
            response = await self._http.post(
                self._url, json=sendgrid_body(payload), headers=self._headers, timeout=self._timeout
            )
        except httpx.ReadTimeout as exc:
            # the request went out and no answer came: SendGrid may have queued the mail
            raise OutcomeUnknown(self.name, f"no response in time: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise TransientProviderError(
                self.name, f"{type(exc).__name__}: {exc}", code="connection_error"
            ) from exc
        status = response.status_code
        if status in (200, 202):
            return SendResult(self.name, response.headers.get("x-message-id"))
        detail = f"{status} {response.text[:300]}"
        if status == 429 or status >= 500 or status in (401, 403):
            raise TransientProviderError(
                self.name, detail, code=f"http_{status}", retry_after_ms=_retry_after_ms(response)
            )
        raise PermanentProviderError(self.name, detail, code=f"http_{status}")

    async def close(self) -> None:
        """The HTTP client belongs to the service and is closed there."""
