"""Push tokens: a user's devices, added, listed, removed, moved and pruned."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.support.servers import app_client
from tests.user_service.conftest import new_account
from user_service.app import create_app


def _tokens_url(user_id: str) -> str:
    return f"/api/v1/users/{user_id}/push-tokens"


async def _add(client, account, token, **fields):
    response = await client.post(
        _tokens_url(account.id), json={"token": token, **fields}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def _listed(client, account) -> list[str]:
    response = await client.get(_tokens_url(account.id), headers=account.headers)
    assert response.status_code == 200
    return [t["token"] for t in response.json()["data"]]


async def _in_profile(client, account) -> list[str]:
    user = (await client.get(f"/api/v1/users/{account.id}", headers=account.headers)).json()
    return [t["token"] for t in user["data"]["push_tokens"]]


async def test_a_user_registers_several_devices(client, alice):
    phone = await _add(client, alice, "tok-phone", platform="android", device_name="Pixel")
    await _add(client, alice, "tok-laptop", platform="web")

    assert set(phone) == {"id", "token", "platform", "device_name", "created_at", "last_seen_at"}
    assert (phone["token"], phone["platform"], phone["device_name"]) == (
        "tok-phone",
        "android",
        "Pixel",
    )
    assert await _listed(client, alice) == ["tok-phone", "tok-laptop"]
    assert await _in_profile(client, alice) == ["tok-phone", "tok-laptop"]


async def test_adding_the_same_token_again_is_idempotent(client, alice):
    first = await _add(client, alice, "tok-same", platform="ios")
    second = await _add(client, alice, "tok-same", device_name="iPhone")

    assert second["id"] == first["id"]
    assert second["platform"] == "ios"  # kept
    assert second["device_name"] == "iPhone"  # updated
    assert second["last_seen_at"] >= first["last_seen_at"]
    assert await _listed(client, alice) == ["tok-same"]


async def test_a_token_another_user_holds_is_refused_not_silently_moved(client, alice, bob):
    await _add(client, alice, "tok-shared-device")

    taken = await client.post(
        _tokens_url(bob.id),
        json={"token": "tok-shared-device", "take_over": True},  # only admins may take over
        headers=bob.headers,
    )

    assert taken.status_code == 409
    assert taken.json()["error"] == "push_token_in_use"
    assert await _listed(client, alice) == ["tok-shared-device"]
    assert await _listed(client, bob) == []


async def test_an_admin_moves_a_handed_over_device_on_purpose(client, alice, bob, admin_headers):
    await _add(client, alice, "tok-shared-device")

    moved = await client.post(
        _tokens_url(bob.id),
        json={"token": "tok-shared-device", "take_over": True},
        headers=admin_headers,
    )

    assert moved.status_code == 201, moved.text
    assert await _listed(client, alice) == []
    assert await _listed(client, bob) == ["tok-shared-device"]


async def test_removing_a_device(client, alice, bob):
    token = await _add(client, alice, "tok-remove-me")
    url = f"{_tokens_url(alice.id)}/{token['id']}"

    removed = await client.delete(url, headers=alice.headers)
    again = await client.delete(url, headers=alice.headers)

    assert removed.status_code == 200
    assert removed.json()["data"] == {"id": token["id"], "deleted": True}
    assert again.status_code == 404
    assert again.json()["error"] == "push_token_not_found"
    assert await _listed(client, alice) == []


async def test_a_device_cannot_be_removed_through_another_users_path(client, alice, bob):
    token = await _add(client, alice, "tok-alices")

    response = await client.delete(f"{_tokens_url(bob.id)}/{token['id']}", headers=bob.headers)

    assert response.status_code == 404
    assert await _listed(client, alice) == ["tok-alices"]


async def test_invalidating_prunes_the_token_idempotently(client, alice, service_headers):
    kept = await _add(client, alice, "tok-alive")
    dead = await _add(client, alice, "tok-unregistered")
    url = f"{_tokens_url(alice.id)}/invalidate"
    body = {"token": "tok-unregistered", "reason": "UNREGISTERED"}

    first = await client.post(url, json=body, headers=service_headers)
    second = await client.post(url, json=body, headers=service_headers)
    unknown = await client.post(url, json={"token": "never-seen"}, headers=service_headers)

    assert first.status_code == second.status_code == unknown.status_code == 200
    assert first.json()["data"] == {"pruned": True, "token_id": dead["id"]}
    assert second.json()["data"] == {"pruned": False, "token_id": None}
    assert unknown.json()["data"]["pruned"] is False
    assert await _listed(client, alice) == [kept["token"]]
    assert await _in_profile(client, alice) == [kept["token"]]
    gone = await client.delete(f"{_tokens_url(alice.id)}/{dead['id']}", headers=alice.headers)
    assert gone.status_code == 404


async def test_invalidating_for_the_wrong_user_or_a_deleted_user_prunes_nothing(
    client, alice, bob, service_headers, admin_headers
):
    await _add(client, alice, "tok-of-alice")

    wrong_user = await client.post(
        f"{_tokens_url(bob.id)}/invalidate", json={"token": "tok-of-alice"}, headers=service_headers
    )
    no_user = await client.post(
        f"{_tokens_url(str(uuid.uuid4()))}/invalidate",
        json={"token": "tok-of-alice"},
        headers=service_headers,
    )

    assert wrong_user.json()["data"]["pruned"] is False
    assert no_user.status_code == 200
    assert no_user.json()["data"]["pruned"] is False
    assert await _listed(client, alice) == ["tok-of-alice"]


async def test_a_pruned_token_added_again_comes_back(client, alice, service_headers):
    first = await _add(client, alice, "tok-reinstalled")
    await client.post(
        f"{_tokens_url(alice.id)}/invalidate",
        json={"token": "tok-reinstalled", "reason": "UNREGISTERED"},
        headers=service_headers,
    )

    again = await _add(client, alice, "tok-reinstalled")

    assert again["id"] == first["id"]
    assert await _listed(client, alice) == ["tok-reinstalled"]


async def test_devices_beyond_the_limit_evict_the_least_recently_seen(settings):
    limited = create_app(settings.model_copy(update={"max_push_tokens_per_user": 2}))
    async with app_client(limited) as client:
        carol = await new_account(client)
        await _add(client, carol, "tok-1")
        await _add(client, carol, "tok-2")
        await _add(client, carol, "tok-1")  # seen again: now tok-2 is the stalest
        await _add(client, carol, "tok-3")

        assert sorted(await _listed(client, carol)) == ["tok-1", "tok-3"]


async def test_unknown_users_have_no_devices(client, admin_headers):
    response = await client.get(_tokens_url(str(uuid.uuid4())), headers=admin_headers)

    assert response.status_code == 404
    assert response.json()["error"] == "user_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"token": ""},
        {"token": "   "},
        {"token": "x" * 1025},
        {"token": "t", "platform": "blackberry"},
        {"token": "t", "extra": 1},
        {"token": 42},
        {},
    ],
)
async def test_invalid_device_bodies_are_422(client, alice, body):
    response = await client.post(_tokens_url(alice.id), json=body, headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


async def test_the_same_token_added_concurrently_ends_with_one_owner(client, alice, bob):
    responses = await asyncio.gather(
        *(
            client.post(_tokens_url(who.id), json={"token": "tok-race"}, headers=who.headers)
            for who in (alice, bob, alice, bob)
        )
    )

    # whoever registered it first owns it; the other user is told it is taken
    assert {r.status_code for r in responses} <= {201, 409}
    owners = [await _listed(client, alice), await _listed(client, bob)]
    assert sorted(owners) == [[], ["tok-race"]]
    winner = alice if owners[0] else bob
    for who, response in zip((alice, bob, alice, bob), responses, strict=True):
        assert response.status_code == (201 if who is winner else 409)
