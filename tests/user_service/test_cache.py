"""After every committed change to a user, the ``user`` and ``prefs`` cache versions move on, so
delivery services reading through libs.clients.users see the change on their next read."""

from __future__ import annotations

import aiohttp
import pytest

from libs.clients.cache import VersionedCache
from libs.clients.http import ServiceClient, ServiceTokenProvider
from libs.clients.users import UserDirectory
from tests.support.servers import live_server
from tests.user_service.conftest import SERVICE_EMAIL, SERVICE_PASSWORD, register


async def _versions(redis, keys, user_id: str) -> tuple[int, int]:
    user, prefs = await redis.mget(
        keys.cache_version("user", user_id), keys.cache_version("prefs", user_id)
    )
    return int(user or 0), int(prefs or 0)


async def _change_profile(client, alice, helpers):
    return await client.patch(
        f"/api/v1/users/{alice.id}", json={"name": "Changed"}, headers=alice.headers
    )


async def _change_preferences(client, alice, helpers):
    return await client.patch(
        f"/api/v1/users/{alice.id}/preferences", json={"push": False}, headers=alice.headers
    )


async def _add_device(client, alice, helpers):
    return await client.post(
        f"/api/v1/users/{alice.id}/push-tokens", json={"token": "c-new"}, headers=alice.headers
    )


async def _remove_device(client, alice, helpers):
    return await client.delete(
        f"/api/v1/users/{alice.id}/push-tokens/{helpers['token_id']}", headers=alice.headers
    )


async def _prune_device(client, alice, helpers):
    return await client.post(
        f"/api/v1/users/{alice.id}/push-tokens/invalidate",
        json={"token": "c-existing", "reason": "UNREGISTERED"},
        headers=helpers["service"],
    )


async def _delete_user(client, alice, helpers):
    return await client.delete(f"/api/v1/users/{alice.id}", headers=alice.headers)


@pytest.mark.parametrize(
    "change",
    [
        _change_profile,
        _change_preferences,
        _add_device,
        _remove_device,
        _prune_device,
        _delete_user,
    ],
)
async def test_every_change_bumps_both_cache_versions(
    client, alice, service_headers, redis, keys, change
):
    added = await client.post(
        f"/api/v1/users/{alice.id}/push-tokens",
        json={"token": "c-existing"},
        headers=alice.headers,
    )
    before = await _versions(redis, keys, alice.id)

    response = await change(
        client, alice, {"token_id": added.json()["data"]["id"], "service": service_headers}
    )

    assert response.status_code < 300, response.text
    after = await _versions(redis, keys, alice.id)
    assert after[0] > before[0]
    assert after[1] > before[1]


async def test_registration_bumps_the_new_users_versions(client, redis, keys):
    user = await register(client)

    user_version, prefs_version = await _versions(redis, keys, user["id"])
    assert user_version > 0
    assert prefs_version > 0


async def test_moving_a_device_bumps_both_owners(client, alice, bob, redis, keys, admin_headers):
    await client.post(
        f"/api/v1/users/{alice.id}/push-tokens", json={"token": "c-moving"}, headers=alice.headers
    )
    alice_before = await _versions(redis, keys, alice.id)
    bob_before = await _versions(redis, keys, bob.id)

    moved = await client.post(
        f"/api/v1/users/{bob.id}/push-tokens",
        json={"token": "c-moving", "take_over": True},
        headers=admin_headers,
    )

    assert moved.status_code == 201
    alice_after = await _versions(redis, keys, alice.id)
    bob_after = await _versions(redis, keys, bob.id)
    assert alice_after[0] > alice_before[0]
    assert alice_after[1] > alice_before[1]
    assert bob_after[0] > bob_before[0]
    assert bob_after[1] > bob_before[1]


async def test_a_refused_change_bumps_nothing(client, alice, bob, redis, keys):
    before = await _versions(redis, keys, alice.id)

    response = await client.patch(
        f"/api/v1/users/{alice.id}", json={"email": bob.email}, headers=alice.headers
    )

    assert response.status_code == 409
    assert await _versions(redis, keys, alice.id) == before


async def test_delivery_services_see_changes_on_their_next_read(client, alice, redis, keys):
    async with live_server(client.asgi, lifespan="off") as url, aiohttp.ClientSession() as http:
        tokens = ServiceTokenProvider(http, url, SERVICE_EMAIL, SERVICE_PASSWORD)
        directory = UserDirectory(
            ServiceClient("user_service", url, http, tokens), VersionedCache(redis, keys)
        )
        await _directory_sees_changes(client, alice, directory)


async def _directory_sees_changes(client, alice, directory: UserDirectory) -> None:
    assert (await directory.get_preferences(alice.id)).push is True
    assert (await directory.get_user(alice.id)).push_tokens == []

    await client.patch(
        f"/api/v1/users/{alice.id}/preferences", json={"push": False}, headers=alice.headers
    )
    await client.post(
        f"/api/v1/users/{alice.id}/push-tokens",
        json={"token": "c-dir", "platform": "ios"},
        headers=alice.headers,
    )

    assert (await directory.get_preferences(alice.id)).push is False
    profile = await directory.get_user(alice.id)
    assert [(d.token, d.platform) for d in profile.push_tokens] == [("c-dir", "ios")]
    assert profile.preferences.push is False

    await directory.invalidate_push_token(alice.id, "c-dir", "UNREGISTERED")

    assert (await directory.get_user(alice.id)).push_tokens == []


async def test_a_lost_version_key_never_brings_back_an_entry_cached_under_an_old_number(
    redis, keys
):
    """The version key expired or was evicted while entries written under its numbers were still
    cached: a new version must never equal one of those numbers, or the stale entry comes back."""
    cache = VersionedCache(redis, keys)
    answers = iter(["first", "second", "third"])

    async def fetch() -> str:
        return next(answers)

    async def read() -> str:
        return str(await cache.get_through("user", "u1", fetch, fresh_ttl=3600, stale_ttl=3600))

    await cache.bump("user", "u1")
    assert await read() == "first"  # cached under the current version
    await redis.delete(keys.cache_version("user", "u1"))  # evicted (or expired)
    assert await read() == "second"  # a version nobody used: fetched again
    await cache.bump("user", "u1")  # the owner changes the user
    assert await read() == "third"  # never the "first" entry of the old number
