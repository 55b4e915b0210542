"""Channel preferences: read by delivery services, changed by the user or an admin."""

from __future__ import annotations

import pytest


def _url(user_id: str) -> str:
    return f"/api/v1/users/{user_id}/preferences"


async def test_preferences_default_to_both_channels(client, alice, service_headers):
    response = await client.get(_url(alice.id), headers=service_headers)

    assert response.status_code == 200
    assert response.json()["data"] == {"email": True, "push": True}


async def test_a_partial_update_changes_only_the_given_channel(client, alice, service_headers):
    updated = await client.patch(_url(alice.id), json={"email": False}, headers=alice.headers)
    read = await client.get(_url(alice.id), headers=service_headers)
    profile = await client.get(f"/api/v1/users/{alice.id}", headers=alice.headers)

    assert updated.status_code == 200
    assert updated.json()["data"] == {"email": False, "push": True}
    assert read.json()["data"] == {"email": False, "push": True}
    assert profile.json()["data"]["preferences"] == {"email": False, "push": True}


async def test_an_admin_changes_anyones_preferences(client, alice, admin_headers):
    response = await client.patch(
        _url(alice.id), json={"email": False, "push": False}, headers=admin_headers
    )

    assert response.json()["data"] == {"email": False, "push": False}


@pytest.mark.parametrize("body", [{"email": "no"}, {"push": 0}, {"sms": False}, [True]])
async def test_invalid_preferences_are_422(client, alice, body):
    response = await client.patch(_url(alice.id), json=body, headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert (await client.get(_url(alice.id), headers=alice.headers)).json()["data"] == {
        "email": True,
        "push": True,
    }
