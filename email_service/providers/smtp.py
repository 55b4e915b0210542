"""SMTP relay with a pool of reused connections (aiosmtplib).

One reused connection sends about 600 mails/s to a local sink, ten pooled about 1,200, a new
connection per mail about half of one (ARCHITECTURE.md). A connection that failed in any way is
discarded, never returned to the pool; an idle one is checked with NOOP before reuse.

Classification: 5xx replies for a recipient or the message are permanent; 4xx replies, timeouts
and connection errors are transient. Only connection errors, timeouts and replies outside a
recipient (421 service not available, ...) count against the relay's circuit breaker: a deferred
recipient means the relay is working.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib
import structlog

from email_service.providers import OutgoingEmail
from libs.providers import PermanentProviderError, SendResult, TransientProviderError

log = structlog.get_logger(__name__)

IDLE_CHECK_SECONDS = 5.0


@dataclass(frozen=True)
class SmtpConfig:
    name: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool = False
    timeout: float = 10.0
    pool_size: int = 10


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    last_used: float


class SmtpProvider:
    def __init__(self, config: SmtpConfig) -> None:
        self.name = config.name
        self._config = config
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(config.pool_size)
        self._closed = False

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def _connect(self) -> _Connection:
        c = self._config
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            timeout=c.timeout,
            use_tls=c.use_tls,
            start_tls=c.start_tls,
            username=c.username,
            password=c.password,
        )
        await client.connect()
        return _Connection(client, time.monotonic())

    async def _checkout(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if time.monotonic() - conn.last_used < IDLE_CHECK_SECONDS:
                return conn
            try:
                await conn.client.noop()
                return conn
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                _close_quietly(conn)
        return await self._connect()

    async def send(self, payload: OutgoingEmail) -> SendResult:
        message = to_mime(payload)
        async with self._slots:
            conn: _Connection | None = None
            try:
                conn = await self._checkout()
                await conn.client.send_message(message)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                conn = _discard(conn)
                codes = [r.code for r in exc.recipients]
                detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
                if codes and all(code >= 500 for code in codes):
                    raise PermanentProviderError(
                        self.name, f"recipient refused: {detail}", code="recipient_refused",
                        provider_fault=False,
                    ) from exc
                raise TransientProviderError(
                    self.name, f"recipient deferred: {detail}", code="recipient_deferred",
                    provider_fault=False,
                ) from exc
            except aiosmtplib.SMTPResponseException as exc:
                conn = _discard(conn)
                if exc.code >= 500 and not isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                    raise PermanentProviderError(
                        self.name, f"{exc.code} {exc.message}", code="message_refused"
                    ) from exc
                raise TransientProviderError(self.name, f"{exc.code} {exc.message}") from exc
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                conn = _discard(conn)
                raise TransientProviderError(
                    self.name, f"{type(exc).__name__}: {exc}", code="connection_error"
                ) from exc
            finally:
                if conn is not None:
                    conn.last_used = time.monotonic()
                    if self._closed:
                        _close_quietly(conn)
                    else:
                        self._idle.append(conn)
        return SendResult(self.name, payload.message_id)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                await asyncio.wait_for(conn.client.quit(), 2)
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                _close_quietly(conn)


def to_mime(email: OutgoingEmail) -> EmailMessage:
    """A multipart/alternative message: plain text first, HTML as the preferred alternative."""
    mail = EmailMessage()
    mail["From"] = email.sender
    mail["To"] = Address(display_name=email.to_name, addr_spec=email.to_address)
    mail["Subject"] = email.subject
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = email.message_id
    for name, value in email.headers.items():
        mail[name] = value
    mail.set_content(email.text)
    if email.html:
        mail.add_alternative(email.html, subtype="html")
    return mail


def _discard(conn: _Connection | None) -> _Connection | None:
    """Close a connection that failed; returns None so the caller drops its reference."""
    if conn is not None:
        _close_quietly(conn)
    return None


def _close_quietly(conn: _Connection) -> None:
    try:
        conn.client.close()
    except (aiosmtplib.SMTPException, OSError, RuntimeError):
        log.debug("smtp.close_failed")
