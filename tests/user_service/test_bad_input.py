"""Input PostgreSQL cannot hold is the caller's fault (4xx), never a 500. Found by the fuzz tier
(tests/fuzz): each of these answered 500 before."""

from __future__ import annotations

from tests.user_service.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, login


async def test_a_page_beyond_any_offset_is_422(client, admin_headers):
    for path in ("/api/v1/users/", "/api/v1/clients/"):
        response = await client.get(path, params={"page": 2**63}, headers=admin_headers)

        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"] == "validation_error"


async def test_a_nul_character_in_stored_or_searched_text_is_422(client, admin_headers):
    login_attempt = await client.post(
        "/api/v1/auth/login", json={"email": "a\x00@example.com", "password": "x"}
    )
    new_client = await client.post(
        "/api/v1/clients/", json={"name": "shop\x00"}, headers=admin_headers
    )
    search = await client.get("/api/v1/users/", params={"name": "\x00"}, headers=admin_headers)

    for response in (login_attempt, new_client, search):
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_value"
    assert (await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)).count(".") == 2  # still serving


async def test_a_path_with_a_control_character_is_400(client, admin_headers):
    response = await client.get("/api/v1/clients/%0A", headers=admin_headers)
    me = await client.get("/api/v1/users/me%00", headers=admin_headers)

    assert response.status_code == me.status_code == 400
    assert response.json()["error"] == "invalid_path"
