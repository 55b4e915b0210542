"""Redis connection and every key name the system uses (one place per fact).

All keys start with the configured prefix so that deployments and test runs can share a server.
"""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(url: str) -> Redis:
    """A pooled asyncio client; responses are bytes (callers decode what they read)."""
    return Redis.from_url(url, health_check_interval=30, socket_timeout=5, socket_connect_timeout=5)


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

    def index(self, kind: str, value: str = "") -> str:
        """Sorted sets of notification ids by creation time: all, user:, type:, status:."""
        return f"{self.prefix}idx:{kind}:{value}" if value else f"{self.prefix}idx:{kind}"

    # delivery
    def send_claim(self, channel: str, notification_id: str) -> str:
        return f"{self.prefix}claim:{channel}:{notification_id}"

    def rate_limit(self, name: str) -> str:
        return f"{self.prefix}ratelimit:{name}"

    def breaker(self, name: str) -> str:
        return f"{self.prefix}breaker:{name}"

    # caches (versioned: the owner bumps the version, readers use the current version's key)
    def cache_version(self, kind: str, ident: str) -> str:
        return f"{self.prefix}cachever:{kind}:{ident}"

    def cache(self, kind: str, ident: str, version: int, extra: str = "") -> str:
        suffix = f":{extra}" if extra else ""
        return f"{self.prefix}cache:{kind}:{ident}:v{version}{suffix}"
