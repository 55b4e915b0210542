"""Reading, updating, deleting and listing users."""

from __future__ import annotations

import uuid

import pytest

from tests.user_service.conftest import ADMIN_EMAIL, PASSWORD, login, register

USERS = "/api/v1/users"


async def test_admin_and_service_read_any_user(client, admin_headers, service_headers, alice):
    by_admin = await client.get(f"{USERS}/{alice.id}", headers=admin_headers)
    by_service = await client.get(f"{USERS}/{alice.id}", headers=service_headers)

    assert by_admin.status_code == by_service.status_code == 200
    assert by_admin.json()["data"] == by_service.json()["data"]
    assert by_admin.json()["data"]["email"] == alice.email


async def test_unknown_user_is_404_and_a_malformed_id_is_422(client, service_headers):
    missing = await client.get(f"{USERS}/{uuid.uuid4()}", headers=service_headers)
    malformed = await client.get(f"{USERS}/not-a-uuid", headers=service_headers)

    assert missing.status_code == 404
    assert missing.json()["error"] == "user_not_found"
    assert malformed.status_code == 422
    assert malformed.json()["error"] == "validation_error"


async def test_a_user_asking_for_a_missing_user_gets_403_not_404(client, alice):
    response = await client.get(f"{USERS}/{uuid.uuid4()}", headers=alice.headers)

    assert response.status_code == 403


async def test_me_is_the_caller(client, alice, admin_headers):
    mine = await client.get(f"{USERS}/me", headers=alice.headers)
    admins = await client.get(f"{USERS}/me", headers=admin_headers)

    assert mine.json()["data"]["id"] == alice.id
    assert admins.json()["data"]["email"] == ADMIN_EMAIL
    assert admins.json()["data"]["role"] == "admin"


async def test_a_user_updates_their_profile(client, alice):
    response = await client.patch(
        f"{USERS}/{alice.id}",
        json={"name": "Alice New", "language": "fr", "email": alice.email.upper()},
        headers=alice.headers,
    )

    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["name"], data["language"], data["email"]) == ("Alice New", "fr", alice.email)
    assert data["updated_at"] > data["created_at"]


async def test_changing_to_a_taken_email_is_409(client, alice, bob):
    response = await client.patch(
        f"{USERS}/{alice.id}", json={"email": bob.email}, headers=alice.headers
    )

    assert response.status_code == 409
    assert response.json()["error"] == "email_taken"


async def test_unknown_or_null_fields_on_update(client, alice):
    unknown = await client.patch(f"{USERS}/{alice.id}", json={"nick": "x"}, headers=alice.headers)
    null_name = await client.patch(
        f"{USERS}/{alice.id}", json={"name": None}, headers=alice.headers
    )

    assert unknown.status_code == 422
    assert null_name.status_code == 200
    assert null_name.json()["data"]["name"] == "Alice Doe"


async def test_only_an_admin_changes_a_role(client, alice, admin_headers):
    own = await client.patch(f"{USERS}/{alice.id}", json={"role": "admin"}, headers=alice.headers)
    same = await client.patch(f"{USERS}/{alice.id}", json={"role": "user"}, headers=alice.headers)
    by_admin = await client.patch(
        f"{USERS}/{alice.id}", json={"role": "service"}, headers=admin_headers
    )

    assert own.status_code == 403
    assert own.json()["error"] == "role_change_forbidden"
    assert same.status_code == 200
    assert by_admin.status_code == 200
    assert by_admin.json()["data"]["role"] == "service"


async def test_a_password_change_needs_the_current_password(client, alice):
    url = f"{USERS}/{alice.id}"
    new = "brand-new-secret-7"

    missing = await client.patch(url, json={"password": new}, headers=alice.headers)
    wrong = await client.patch(
        url, json={"password": new, "current_password": "not-it-123"}, headers=alice.headers
    )
    weak = await client.patch(
        url, json={"password": "short", "current_password": PASSWORD}, headers=alice.headers
    )
    changed = await client.patch(
        url, json={"password": new, "current_password": PASSWORD}, headers=alice.headers
    )

    assert missing.status_code == 422
    assert missing.json()["error"] == "current_password_required"
    assert wrong.status_code == 403
    assert wrong.json()["error"] == "invalid_current_password"
    assert weak.status_code == 422
    assert weak.json()["error"] == "weak_password"
    assert changed.status_code == 200
    assert new not in changed.text
    old_login = await client.post(
        "/api/v1/auth/login", json={"email": alice.email, "password": PASSWORD}
    )
    assert old_login.status_code == 401
    await login(client, alice.email, new)


async def test_an_admin_resets_a_password_without_the_current_one(client, alice, admin_headers):
    response = await client.patch(
        f"{USERS}/{alice.id}", json={"password": "reset-by-admin-1"}, headers=admin_headers
    )

    assert response.status_code == 200
    await login(client, alice.email, "reset-by-admin-1")


async def test_deleting_a_user_removes_them_and_their_devices(client, alice, admin_headers):
    await client.post(
        f"{USERS}/{alice.id}/push-tokens", json={"token": "dev-of-alice"}, headers=alice.headers
    )

    deleted = await client.delete(f"{USERS}/{alice.id}", headers=alice.headers)

    assert deleted.status_code == 200
    assert deleted.json()["data"] == {"id": alice.id, "deleted": True}
    assert (await client.get(f"{USERS}/{alice.id}", headers=admin_headers)).status_code == 404
    assert (await client.get(f"{USERS}/me", headers=alice.headers)).status_code == 404
    again = await client.delete(f"{USERS}/{alice.id}", headers=admin_headers)
    assert again.status_code == 404
    # the device token is free for someone else
    bob = await register(client, push_token="dev-of-alice")
    assert [t["token"] for t in bob["push_tokens"]] == ["dev-of-alice"]


async def test_the_last_admin_can_be_neither_deleted_nor_demoted(client, admin_headers):
    admin_id = (await client.get(f"{USERS}/me", headers=admin_headers)).json()["data"]["id"]

    deleted = await client.delete(f"{USERS}/{admin_id}", headers=admin_headers)
    demoted = await client.patch(
        f"{USERS}/{admin_id}", json={"role": "user"}, headers=admin_headers
    )
    second = await register(client, headers=admin_headers, role="admin")
    now_allowed = await client.delete(f"{USERS}/{admin_id}", headers=admin_headers)

    assert deleted.status_code == demoted.status_code == 409
    assert deleted.json()["error"] == "last_admin"
    assert second["role"] == "admin"
    assert now_allowed.status_code == 200


# -- listing --------------------------------------------------------------------------------


@pytest.fixture
async def population(client, admin_headers):
    """Five users with recognisable names and emails, plus the seeded admin and service."""
    made = []
    for index, name in enumerate(["Carol Sun", "Dave Moon", "Erin Sun", "Frank Star", "Gina Sky"]):
        made.append(
            await register(
                client, name=name, email=f"pop{index}.{uuid.uuid4().hex[:6]}@list.example"
            )
        )
    return made


async def test_listing_paginates_with_meta(client, admin_headers, population):
    first = await client.get(f"{USERS}/?limit=3&page=1", headers=admin_headers)
    last = await client.get(f"{USERS}/?limit=3&page=3", headers=admin_headers)

    assert first.status_code == 200
    assert len(first.json()["data"]) == 3
    assert first.json()["meta"] == {
        "total": 7,
        "limit": 3,
        "page": 1,
        "total_pages": 3,
        "has_next": True,
        "has_previous": False,
    }
    assert len(last.json()["data"]) == 1
    assert last.json()["meta"]["has_next"] is False
    assert last.json()["meta"]["has_previous"] is True
    all_ids = {u["id"] for u in first.json()["data"]} | {u["id"] for u in last.json()["data"]}
    assert len(all_ids) == 4  # pages do not overlap


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("name=sun", {"Carol Sun", "Erin Sun"}),
        ("email=POP3", {"Frank Star"}),
        ("email=list.example&name=o", {"Carol Sun", "Dave Moon"}),
        ("role=service", {"Service account"}),
        ("name=%25", set()),  # LIKE wildcards match literally
        ("name=_", set()),
    ],
)
async def test_listing_filters(client, admin_headers, population, query, names):
    response = await client.get(f"{USERS}/?{query}&limit=100", headers=admin_headers)

    assert response.status_code == 200
    assert {u["name"] for u in response.json()["data"]} == names
    assert response.json()["meta"]["total"] == len(names)


@pytest.mark.parametrize("query", ["page=0", "limit=0", "limit=101", "role=root", "page=x"])
async def test_bad_list_parameters_are_422(client, admin_headers, query):
    response = await client.get(f"{USERS}/?{query}", headers=admin_headers)

    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


async def test_many_users_are_read_in_one_call_by_services_only(
    client, alice, bob, service_headers
):
    unknown = str(uuid.uuid4())
    response = await client.post(
        "/api/v1/users/lookup",
        json={"ids": [alice.id, unknown, bob.id, alice.id]},
        headers=service_headers,
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert sorted(u["id"] for u in data["users"]) == sorted([alice.id, bob.id])
    assert data["missing"] == [unknown]
    assert {"preferences", "push_tokens", "email"} <= set(data["users"][0])
    as_alice = await client.post(
        "/api/v1/users/lookup", json={"ids": [bob.id]}, headers=alice.headers
    )
    assert as_alice.status_code == 403
