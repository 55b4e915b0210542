"""Redis connection, every key name the system uses (one place per fact), and the Lua loader.

All keys start with the configured prefix so that deployments and test runs can share a server.
Lua scripts live in ``.lua`` files next to the module that runs them; :func:`lua_script` reads one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from functools import cache
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from libs.inflight import Sends


def create_redis(url: str, *, auto_pipeline: bool = False) -> Redis:
    """A pooled asyncio client; responses are bytes (callers decode what they read).

    ``auto_pipeline``: commands issued together (in one turn of the event loop, or while earlier
    pipelines are under way) go out as one pipeline (:class:`AutoPipelineRedis`); never for a
    client that runs blocking commands.
    """
    client_class = AutoPipelineRedis if auto_pipeline else Redis
    return client_class.from_url(
        url, health_check_interval=30, socket_timeout=5, socket_connect_timeout=5
    )


Pending = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class AutoPipelineRedis(Redis):
    """A client that sends the commands issued together as one pipeline.

    A consumer has dozens of messages in flight and a gateway dozens of requests; each makes the
    same few Redis calls at about the same moment. Sent one by one, every call is a round trip
    and a pair of system calls on both ends; collected per loop turn, a few dozen cost one. Each
    caller still gets its own result (or its own error): a pipeline is not a transaction, and a
    failing command fails only its caller. Blocking commands (``XREADGROUP ... BLOCK``) must not
    go through such a client: they would hold up everything collected with them.

    At most :attr:`max_in_flight` pipelines are under way at once (:mod:`libs.inflight`); what
    is issued meanwhile waits and goes as one pipeline when one of them ends. Under load the
    pipelines grow instead of each loop turn sending its own handful: the gateway used 0.82 of
    the CPU a request it used when every turn sent at once, and answered a fifth more requests a
    second (two gateways on one stack, 8 interleaved windows at c=50 each, medians). Four under
    way gained nothing, one less than two. When Redis is quiet nothing waits.
    """

    max_in_flight = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[Pending] = []
        self._sends = Sends(self._next_pipeline, self.max_in_flight)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((args, options, future))
        self._sends.wake()
        return await future

    def _next_pipeline(self) -> Coroutine[Any, Any, None] | None:
        if not self._pending:
            return None
        batch, self._pending = self._pending, []
        return self._send(batch)

    async def _send(self, batch: list[Pending]) -> None:
        if len(batch) == 1:
            args, options, future = batch[0]
            try:
                result = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
            except BaseException as exc:  # the caller gets whatever happened, cancellation too
                _settle(future, exc)
            else:
                _settle(future, result)
            return
        pipe = self.pipeline(transaction=False)
        for args, options, _ in batch:
            pipe.execute_command(*args, **options)
        try:
            results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for _, _, future in batch:
                _settle(future, exc)
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # the caller gave up (cancelled) meanwhile
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@cache
def lua_script(module_file: str, name: str) -> str:
    """The Lua source ``name`` kept beside ``module_file`` (pass ``__file__``)."""
    return (Path(module_file).resolve().parent / name).read_text(encoding="utf-8")


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    # notifications (gateway and delivery services)
    def idempotency(self, scope: str, request_id: str) -> str:
        return f"{self.prefix}idem:{scope}:{request_id}"

    def notification(self, notification_id: str) -> str:
        return f"{self.prefix}notif:{notification_id}"

    def timeline(self, notification_id: str) -> str:
        return f"{self.prefix}notif:{notification_id}:timeline"

    def history_stream(self) -> str:
        """Every status change, for the recorder that keeps the durable log (gateway/history.py)."""
        return f"{self.prefix}history"

    def scratch(self) -> str:
        """A fresh key for a short-lived intermediate result (deleted by whoever made it)."""
        return f"{self.prefix}tmp:{uuid.uuid4().hex}"

    # delivery
    def send_claim(self, channel: str, notification_id: str) -> str:
        return f"{self.prefix}claim:{channel}:{notification_id}"

    def instance_alive(self, instance_id: str) -> str:
        """Present while the consumer process ``instance_id`` runs (``""``: the prefix)."""
        return f"{self.prefix}alive:{instance_id}"

    def breaker(self, name: str) -> str:
        return f"{self.prefix}breaker:{name}"

    # rate limits (token buckets) and login throttling
    def rate_limit(self, name: str) -> str:
        return f"{self.prefix}ratelimit:{name}"

    def caller_rate_limit(self, caller: str) -> str:
        """The gateway's bucket for one caller (token subject)."""
        return self.rate_limit(f"gateway:{caller}")

    def provider_rate_limit(self, provider: str) -> str:
        """A provider's send quota, shared by every replica."""
        return self.rate_limit(f"provider:{provider}")

    def login_failures(self, digest: str) -> str:
        return self.rate_limit(f"login-failures:{digest}")

    def login_lock(self, digest: str) -> str:
        return self.rate_limit(f"login-lock:{digest}")

    # access (written by user_service, read by the gateway)
    def revoked_client(self, client_id: str) -> str:
        """Present while tokens issued to a revoked client may still be unexpired."""
        return f"{self.prefix}revoked-client:{client_id}"

    # the operator console (dlq_service): one key per session, named by a digest of its id
    def console_session(self, digest: str) -> str:
        return f"{self.prefix}console:session:{digest}"

    # caches (versioned: the owner bumps the version, readers use the current version's key)
    def cache_version(self, kind: str, ident: str) -> str:
        return f"{self.prefix}cachever:{kind}:{ident}"

    def cache(self, kind: str, ident: str, version: int, extra: str = "") -> str:
        return f"{self.cache_stem(kind, ident)}{version}{self.cache_suffix(extra)}"

    def cache_stem(self, kind: str, ident: str) -> str:
        """What every version's key of ``kind``/``ident`` starts with (the version follows)."""
        return f"{self.prefix}cache:{kind}:{ident}:v"

    @staticmethod
    def cache_suffix(extra: str) -> str:
        return f":{extra}" if extra else ""
