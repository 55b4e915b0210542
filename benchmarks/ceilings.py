"""Ceilings measured in the same run as the system, so every figure is a ratio to one of them.

- intake: the minimal endpoint (``minimal_app.py``: one Redis SET NX, one confirmed publish) under
  uvicorn with 1 or 2 workers, driven by the same wrk script as the gateway;
- SMTP: aiosmtplib straight into the same sink process, with pooled connections, messages built
  beforehand, and again building each one with the standard library's ``email`` package;
- FCM: aiohttp (push_service's client) and httpx (the issue's reference) straight to the same FCM
  stand-in, as many requests in flight as push_service has; the faster is the stand-in's ceiling.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiohttp
import aiosmtplib
import httpx
import jwt
import orjson

from benchmarks.config import ROOT, BenchFailure
from libs.http.lifespan import CLIENT_KEEPALIVE_EXPIRY_SECONDS as KEEPALIVE_SECONDS
from tests.support.servers import free_port

SENDER = "Herald <no-reply@herald.local>"
RECIPIENT = "reader@example.com"
PREBUILT = 2000
# An HTTP ceiling's send lost in transport (the server closed the connection under it): counted
# and resent by the next loop, not fatal (see _for_a_while). Not SMTP's disconnect: an SMTP
# client stays disconnected, so its every later send would fail at once, in a busy loop.
TRANSPORT_ERRORS = (httpx.TransportError, aiohttp.ClientConnectionError)
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


class MinimalServer:
    """The minimal endpoint under uvicorn (uvloop, httptools) with ``workers`` processes."""

    def __init__(self, workers: int, *, amqp_url: str, redis_url: str, redis_prefix: str) -> None:
        self.workers = workers
        self.port = free_port()
        self.env = os.environ | {
            "MINIMAL_RABBITMQ_URL": amqp_url,
            "MINIMAL_REDIS_URL": redis_url,
            "MINIMAL_REDIS_PREFIX": f"{redis_prefix}minimal:",
        }
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.poll() is None else None

    def start(self, timeout: float = 60) -> MinimalServer:
        self.popen = subprocess.Popen(
            [
                sys.executable,
                *("-m", "uvicorn", "benchmarks.minimal_app:create_app", "--factory"),
                *("--host", "127.0.0.1", "--port", str(self.port)),
                *("--workers", str(self.workers), "--loop", "uvloop", "--http", "httptools"),
                *("--no-access-log", "--log-level", "warning"),
            ],
            cwd=ROOT,
            env=self.env,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise BenchFailure(f"the minimal endpoint exited with {self.popen.returncode}")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise BenchFailure("the minimal endpoint did not start")

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.popen = None


async def _for_a_while(
    seconds: float, workers: int, send: Callable[[int, int], Awaitable[None]]
) -> dict[str, Any]:
    """``workers`` loops calling ``send(worker, n)`` until ``seconds`` have passed. A send that
    fails in transport (a connection the server closed under the client) is counted in ``errors``
    and not in the rate; more than 1 % of them fails the figure."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop_at = started + seconds
    counts = [0] * workers
    errors = [0] * workers

    async def work(worker: int) -> None:
        while loop.time() < stop_at:
            try:
                await send(worker, counts[worker])
            except TRANSPORT_ERRORS:
                errors[worker] += 1
                continue
            counts[worker] += 1

    await asyncio.gather(*(work(w) for w in range(workers)))
    elapsed = loop.time() - started
    sent, failed = sum(counts), sum(errors)
    if failed > max(1, sent // 100):
        raise BenchFailure(f"{failed} of {sent + failed} sends to a ceiling failed in transport")
    return {"per_second": round(sent / elapsed, 1), "sent": sent, "errors": failed}


def mail(n: int, tag: str) -> EmailMessage:
    """A message shaped like email_service's: text and HTML alternatives, our headers."""
    name = f"Reader {n}"
    link = f"https://example.com/r/{tag}-{n}"
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = SENDER
    message["To"] = f"{name} <{RECIPIENT}>"
    message["Subject"] = f"Hello {name}"
    message["Date"] = formatdate()
    message["Message-ID"] = f"<{tag}-{n}@herald.local>"
    message["X-Notification-ID"] = f"ceiling-{tag}-{n}"
    message.set_content(f"Hello {name}\n\nOpen {link}\n")
    message.add_alternative(f'<h1>Hello {name}</h1><p><a href="{link}">Open</a></p>', "html")
    return message


async def smtp_ceiling(
    host: str, port: int, seconds: float, connections: int, *, build_each: bool
) -> dict[str, Any]:
    """Mails per second into the sink over ``connections`` reused connections."""
    tag = uuid.uuid4().hex[:8]
    prebuilt = [] if build_each else [mail(n, tag).as_bytes() for n in range(PREBUILT)]
    clients = [aiosmtplib.SMTP(hostname=host, port=port, timeout=30) for _ in range(connections)]
    await asyncio.gather(*(client.connect() for client in clients))

    async def send(worker: int, n: int) -> None:
        i = n * connections + worker
        data = mail(i, tag).as_bytes() if build_each else prebuilt[i % PREBUILT]
        await clients[worker].sendmail(SENDER, [RECIPIENT], data)

    try:
        return await _for_a_while(seconds, connections, send)
    finally:
        await asyncio.gather(*(client.quit() for client in clients), return_exceptions=True)


FCM_CLIENTS = ("aiohttp", "httpx")


async def fcm_ceiling(
    base_url: str, project: str, seconds: float, concurrency: int, *, client: str
) -> dict[str, Any]:
    """FCM v1 sends per second to the stand-in with ``concurrency`` requests in flight over
    HTTP/1.1, from ``client`` (one of :data:`FCM_CLIENTS`)."""
    tag = uuid.uuid4().hex[:8]
    url = f"{base_url}/v1/projects/{project}/messages:send"

    def body(worker: int, n: int) -> bytes:
        i = n * concurrency + worker
        message = {
            "token": f"ceiling-device-{worker}",
            "notification": {"title": f"Hi Reader {i}", "body": "Open the link"},
            "data": {"notification_id": f"ceiling-{tag}-{i}", "link": "https://example.com"},
            "android": {"priority": "normal"},
        }
        return orjson.dumps({"message": message})

    if client == "httpx":
        limits = httpx.Limits(
            max_connections=concurrency,
            max_keepalive_connections=concurrency,
            keepalive_expiry=KEEPALIVE_SECONDS,
        )
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            headers = _fcm_headers(await _fcm_token_httpx(http, base_url))

            async def send_httpx(worker: int, n: int) -> None:
                response = await http.post(url, content=body(worker, n), headers=headers)
                _check_fcm(response.status_code, response.content)

            return await _for_a_while(seconds, concurrency, send_httpx)
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=KEEPALIVE_SECONDS)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(f"{base_url}/token", data=_fcm_grant()) as grant:
            headers = _fcm_headers(str((await grant.json())["access_token"]))

        async def send_aiohttp(worker: int, n: int) -> None:
            async with session.post(url, data=body(worker, n), headers=headers) as response:
                _check_fcm(response.status, await response.read())

        return await _for_a_while(seconds, concurrency, send_aiohttp)


def _fcm_grant() -> dict[str, str]:
    claims = {"iss": "bench", "scope": FCM_SCOPE}
    assertion = jwt.encode(claims, "the stand-in does not check it" * 2, algorithm="HS256")
    return {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}


async def _fcm_token_httpx(http: httpx.AsyncClient, base_url: str) -> str:
    grant = await http.post(f"{base_url}/token", data=_fcm_grant())
    return str(grant.json()["access_token"])


def _fcm_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _check_fcm(status: int, body: bytes) -> None:
    if status != 200:
        raise BenchFailure(f"FCM stand-in: {status} {body[:200]!r}")
