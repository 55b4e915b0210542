"""Redis connection, every key name the system uses (one place per fact), and the Lua loader.

All keys start with the configured prefix so that deployments and test runs can share a server.
Lua scripts live in ``.lua`` files next to the module that runs them; :func:`lua_script` reads one.
"""

from __future__ import annotations

import uuid
from functools import cache
from pathlib import Path

from redis.asyncio import Redis


def create_redis(url: str) -> Redis:
    """A pooled asyncio client; responses are bytes (callers decode what they read)."""
    return Redis.from_url(url, health_check_interval=30, socket_timeout=5, socket_connect_timeout=5)


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
