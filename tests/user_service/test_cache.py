"""After every committed change to a user, the ``user`` and ``prefs`` cache versions move on, so
delivery services reading through libs.clients.users see the change on their next read."""

from __future__ import annotations

import pytest

from libs.clients.cache import VersionedCache
from libs.clients.http import ServiceClient, ServiceTokenProvider
from libs.clients.users import UserDirectory
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
    assert after == (before[0] + 1, before[1] + 1)


async def test_registration_bumps_the_new_users_versions(client, redis, keys):
    user = await register(client)

    assert await _versions(redis, keys, user["id"]) == (1, 1)


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
    assert await _versions(redis, keys, alice.id) == (alice_before[0] + 1, alice_before[1] + 1)
    assert await _versions(redis, keys, bob.id) == (bob_before[0] + 1, bob_before[1] + 1)


async def test_a_refused_change_bumps_nothing(client, alice, bob, redis, keys):
    before = await _versions(redis, keys, alice.id)

    response = await client.patch(
        f"/api/v1/users/{alice.id}", json={"email": bob.email}, headers=alice.headers
    )

    assert response.status_code == 409
    assert await _versions(redis, keys, alice.id) == before


async def test_delivery_services_see_changes_on_their_next_read(client, alice, redis, keys):
    tokens = ServiceTokenProvider(client, "http://testserver", SERVICE_EMAIL, SERVICE_PASSWORD)
    directory = UserDirectory(
        ServiceClient("user_service", "http://testserver", client, tokens),
        VersionedCache(redis, keys),
    )
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
