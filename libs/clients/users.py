"""What delivery needs from user_service: preferences, address, devices; cached in Redis.

Cache kinds ``prefs`` (fresh 1 h) and ``user`` (fresh 5 min), both keyed by user id; user_service
bumps both versions after any change to a user, so changes are visible to the next delivery.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from libs.clients.batching import Coalescer
from libs.clients.cache import VersionedCache, mapped
from libs.clients.errors import UpstreamNotFound
from libs.clients.http import ServiceClient
from libs.clients.models import Preferences, UserProfile

USER_CACHE = "user"
PREFERENCES_CACHE = "prefs"


class UserDirectory:
    def __init__(
        self,
        client: ServiceClient,
        cache: VersionedCache,
        *,
        user_ttl: int = 300,
        preferences_ttl: int = 3600,
        stale_ttl: int = 86400,
    ) -> None:
        self._client = client
        self._cache = cache
        self._user_ttl = user_ttl
        self._prefs_ttl = preferences_ttl
        self._stale_ttl = stale_ttl
        self._profiles: Coalescer[str, Any] = Coalescer(self._lookup)

    async def _lookup(self, idents: list[str]) -> dict[str, Any]:
        """Every profile asked for together, in one request (libs/clients/batching.py)."""
        data = await self._client.request("POST", "/api/v1/users/lookup", json={"ids": idents})
        found: dict[str, Any] = {str(user["id"]): user for user in data["users"]}
        for missing in data["missing"]:
            found[str(missing)] = UpstreamNotFound("user_service", "No such user.", 404)
        return found

    def _preferences(self, ident: str) -> asyncio.Future[Any]:
        async def fetch() -> Any:
            return (await self._profiles.load(ident))["preferences"]

        return self._cache.get_through(
            PREFERENCES_CACHE, ident, fetch, fresh_ttl=self._prefs_ttl, stale_ttl=self._stale_ttl
        )

    async def get_preferences(self, user_id: UUID | str) -> Preferences:
        return Preferences.model_validate(await self._preferences(str(user_id)))

    async def get_user(self, user_id: UUID | str) -> UserProfile:
        ident = str(user_id)

        async def fetch() -> Any:
            return await self._profiles.load(ident)

        data = await self._cache.get_through(
            USER_CACHE, ident, fetch, fresh_ttl=self._user_ttl, stale_ttl=self._stale_ttl
        )
        return UserProfile.model_validate(data)

    def exists(self, user_id: UUID | str) -> asyncio.Future[bool]:
        """Used by the gateway to refuse unknown users; raises UpstreamUnavailable if unsure.
        The lookup starts at the call (:meth:`VersionedCache.get_through`)."""
        return mapped(self._preferences(str(user_id)), lambda _: True, _absent)

    async def invalidate_push_token(self, user_id: UUID | str, token: str, reason: str) -> None:
        """Tell user_service that FCM no longer knows ``token`` so it is pruned."""
        await self._client.request(
            "POST",
            f"/api/v1/users/{user_id}/push-tokens/invalidate",
            json={"token": token, "reason": reason},
        )


def _absent(exc: BaseException) -> bool:
    if isinstance(exc, UpstreamNotFound):
        return False
    raise exc
