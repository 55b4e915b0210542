"""SMTP relay with a pool of reused connections (aiosmtplib).

One reused connection sends about 600 mails/s to a local sink, ten pooled about 1,200, a new
connection per mail about half of one (ARCHITECTURE.md). A connection that failed in any way is
discarded, never returned to the pool; an idle one is checked with NOOP before reuse.

Classification: 5xx replies for a recipient or the message are permanent; 4xx replies, timeouts
and connection errors are transient. Only connection errors, timeouts and replies outside a
recipient (421 service not available, ...) count against the relay's circuit breaker: a deferred
recipient means the relay is working. Once the end-of-data line is in the kernel, no reply in time
(``SMTP_DATA_TIMEOUT_SECONDS``) or a broken connection is neither: the relay may have the message,
so it is an unknown outcome (``OutcomeUnknown``), never resent and never failed over.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

import aiosmtplib
import structlog

from email_service.mime import encode
from email_service.providers import OutgoingEmail
from libs.delivery.providers import (
    Commit,
    OutcomeUnknown,
    PermanentProviderError,
    SendResult,
    TransientProviderError,
)

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
    data_timeout: float = 600.0
    """How long the relay may take to answer the end of data (RFC 5321 4.5.3.2.6: 10 minutes)."""


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

    async def send(self, payload: OutgoingEmail, commit: Commit | None = None) -> SendResult:
        data = encode(payload, eight_bit=True)
        envelope_from = parseaddr(payload.sender)[1]
        async with self._slots:
            conn: _Connection | None = None
            try:
                conn = await self._checkout()
                options: list[str] = []
                if not data.isascii():
                    if conn.client.supports_extension("8bitmime"):
                        options = ["BODY=8BITMIME"]  # RFC 6152: say so before sending 8-bit
                    else:
                        data = encode(payload, eight_bit=False)  # the relay takes 7-bit only
                await _transaction(
                    conn.client,
                    envelope_from,
                    options,
                    payload.to_address,
                    data,
                    commit,
                    self.name,
                    self._config.timeout,
                    self._config.data_timeout,
                )
            except _PastPointOfNoReturn as exc:
                conn = _discard(conn)
                raise OutcomeUnknown(
                    self.name,
                    f"no reply after the end of data ({exc}); the relay may have accepted it",
                ) from exc
            except aiosmtplib.SMTPRecipientRefused as exc:
                conn = _discard(conn)
                detail = f"{exc.code} {exc.message}"
                if exc.code >= 500:
                    raise PermanentProviderError(
                        self.name,
                        f"recipient refused: {detail}",
                        code="recipient_refused",
                        provider_fault=False,
                    ) from exc
                raise TransientProviderError(
                    self.name,
                    f"recipient deferred: {detail}",
                    code="recipient_deferred",
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
            except BaseException:
                # the transaction's state is unknown: never hand this connection out again
                conn = _discard(conn)
                raise
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


class _PastPointOfNoReturn(Exception):
    """The end-of-data line reached the kernel and then the reply did not come (or the connection
    broke): the relay may have accepted the message. Raised with the underlying error as cause."""


async def _transaction(
    client: aiosmtplib.SMTP,
    sender: str,
    mail_options: list[str],
    recipient: str,
    data: bytes,
    commit: Commit | None,
    provider: str,
    timeout: float,
    data_timeout: float,
) -> None:
    """MAIL, RCPT, DATA, and the end-of-data line (the relay's point of no return) with the
    ``committing`` mark written next to it (see libs/delivery/claims.py for why and what it buys).

    The end-of-data line is queued in the kernel first, held back with TCP_CORK so it wakes nobody;
    then the mark is written; then the cork is released. Killed before the line is queued: nothing
    was sent. Killed between the line and the mark (two consecutive system calls): the kernel still
    delivers the queued line when it closes the socket, so the message is sent again on redelivery
    (a duplicate, never a loss). Killed after the mark: both arrive, and the claim says sent.
    Without TCP_CORK (not Linux) the same order holds, with a slightly wider duplicate window.

    The relay's reply is awaited *before* the end-of-data line is written: the kernel holds a
    corked line for at most 200 ms, so a slow mark lets the line go and the relay answer while we
    are still writing the mark, and aiosmtplib drops a reply that arrives with no read pending
    (that lost 250 used to become a read timeout, a failover and a second mail). After the line is
    in the kernel, a timeout (``data_timeout``: RFC 5321 gives the relay 10 minutes) or a broken
    connection is an unknown outcome, raised as :class:`_PastPointOfNoReturn`.
    """
    await client.mail(sender, options=mail_options)
    await client.rcpt(recipient)
    start = await client.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = client.protocol
    transport = protocol.transport if protocol is not None else None
    if protocol is None or transport is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    protocol.write(data)
    try:
        if commit is not None:
            await commit.prepare()  # may wait (a Redis connection): before the critical part
        await _in_kernel(transport, timeout)
        reply = asyncio.ensure_future(protocol.read_response(timeout=data_timeout))
        await asyncio.sleep(0)  # the read is armed: from here on the relay's reply is kept
        try:
            sock = transport.get_extra_info("socket")
            corked = _set_cork(sock, True)
            try:
                protocol.write(b".\r\n")
                if commit is not None:
                    await _in_kernel(transport, timeout)
                    await commit.write(provider)
            finally:
                if corked:
                    _set_cork(sock, False)
        except BaseException:
            reply.cancel()
            raise
        try:
            response = await reply
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise _PastPointOfNoReturn(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if commit is not None:
            await commit.settle()  # reads the mark's reply, or gives its connection back
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)


async def _in_kernel(transport: asyncio.BaseTransport, timeout: float) -> None:
    """Wait until the transport has handed everything written so far to the kernel."""
    deadline = time.monotonic() + timeout
    while getattr(transport, "get_write_buffer_size", lambda: 0)() > 0:
        if time.monotonic() > deadline:
            raise aiosmtplib.SMTPTimeoutError("Timed out writing to the relay")
        await asyncio.sleep(0.001)


def _set_cork(sock: Any, on: bool) -> bool:
    cork = getattr(socket, "TCP_CORK", None)
    if sock is None or cork is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, cork, 1 if on else 0)
    except OSError:
        return False
    return True


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
