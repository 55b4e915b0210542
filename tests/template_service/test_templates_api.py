"""Creating, reading, versioning, activating and listing templates over HTTP."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from libs.http.envelope import MAX_PAGE
from libs.storage.redis import Keys
from tests.template_service.conftest import TemplateApi
from tests.template_service.factories import email_template, push_template, unique_code

BASE = "/api/v1/templates"


async def test_create_returns_version_1_active(api: TemplateApi) -> None:
    data = await api.create(email_template(description="After sign-up"))

    assert data["code"] == "welcome"
    assert data["language"] == "en"
    assert data["type"] == "email"
    assert (data["version"], data["active_version"], data["is_active"]) == (1, 1, True)
    assert data["subject"] == "Welcome, {{ name }}!"
    assert data["description"] == "After sign-up"
    assert data["created_by"].startswith("admin-")
    assert data["fallback"] is False


async def test_create_uses_the_envelope(api: TemplateApi) -> None:
    response = await api.request("POST", f"{BASE}/", json=email_template())

    body = response.json()
    assert response.status_code == 201
    assert set(body) == {"success", "data", "error", "message", "meta"}
    assert body["success"] is True
    assert body["error"] is None


async def test_create_without_trailing_slash_works_too(api: TemplateApi) -> None:
    response = await api.request("POST", BASE, json=email_template())
    assert response.status_code == 201


async def test_create_twice_in_one_language_is_a_conflict(api: TemplateApi) -> None:
    await api.create(email_template())

    response = await api.request("POST", f"{BASE}/", json=email_template(name="Again"))

    assert response.status_code == 409
    assert response.json()["error"] == "template_exists"


async def test_same_code_in_another_language_is_allowed(api: TemplateApi) -> None:
    await api.create(email_template())

    data = await api.create(email_template(language="pt", subject="Olá {{ name }}"))

    assert data["language"] == "pt"
    assert data["version"] == 1


async def test_type_must_match_the_codes_other_languages(api: TemplateApi) -> None:
    await api.create(email_template(code="greeting"))

    response = await api.request(
        "POST", f"{BASE}/", json=push_template(code="greeting", language="pt")
    )

    assert response.status_code == 422
    assert response.json()["error"] == "type_mismatch"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (email_template(subject=None), "subject"),
        (email_template(subject="   "), "subject"),
        (email_template(content=""), "content"),
        (email_template(unknown="x"), "unknown"),
        (email_template(code="Has Spaces"), "code"),
        (email_template(code="x"), "code"),
        (email_template(type="sms"), "type"),
        (email_template(language="not a language"), "language"),
        (email_template(title="Push title"), "title"),
        (push_template(text="plain text"), "text"),
        (push_template(title="A", subject="B"), "title"),
    ],
    ids=[
        "email-without-subject",
        "blank-subject",
        "empty-content",
        "unknown-field",
        "bad-code",
        "short-code",
        "unknown-type",
        "bad-language",
        "email-with-push-field",
        "push-with-text",
        "push-title-and-different-subject",
    ],
)
async def test_invalid_create_is_422_naming_the_problem(
    shared_api: TemplateApi, body: dict[str, object], field: str
) -> None:
    response = await shared_api.request("POST", f"{BASE}/", json=body)

    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["success"] is False
    assert payload["error"] == "validation_error"
    assert field in payload["message"]


async def test_invalid_json_is_400(shared_api: TemplateApi) -> None:
    response = await shared_api.request(
        "POST", f"{BASE}/", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


@pytest.mark.parametrize(
    ("overrides", "field", "line"),
    [
        ({"content": "<p>Hello</p>\n<p>{{ name }</p>"}, "html", 2),
        ({"subject": "Hi {% if %}"}, "subject", 1),
        ({"text": "line one\nline two\n{{ name | nosuchfilter }}"}, "text", 3),
    ],
)
async def test_syntax_error_on_save_is_400_with_field_and_line(
    shared_api: TemplateApi, overrides: dict[str, str], field: str, line: int
) -> None:
    code = unique_code()
    response = await shared_api.request("POST", f"{BASE}/", json=email_template(code, **overrides))

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "template_syntax_error"
    assert body["data"] == {"field": field, "line": line}
    assert f"line {line}" in body["message"]
    assert (await shared_api.request("GET", f"{BASE}/{code}")).status_code == 404


async def test_syntax_error_on_update_is_400_and_creates_no_version(api: TemplateApi) -> None:
    await api.create(push_template())

    response = await api.request(
        "PUT", f"{BASE}/welcome_push", json={"content": "ok\n{% for x in %}"}
    )

    assert response.status_code == 400
    assert response.json()["data"] == {"field": "body", "line": 2}
    versions = await api.request("GET", f"{BASE}/welcome_push/versions")
    assert [v["version"] for v in versions.json()["data"]] == [1]


async def test_concurrent_creates_of_one_template_make_exactly_one(api: TemplateApi) -> None:
    responses = await asyncio.gather(
        *[api.request("POST", f"{BASE}/", json=email_template(name=f"n{i}")) for i in range(6)]
    )

    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409, 409]
    versions = (await api.request("GET", f"{BASE}/welcome/versions")).json()
    assert versions["meta"]["total"] == 1


async def test_concurrent_languages_cannot_mix_types(api: TemplateApi) -> None:
    bodies = [email_template(language=lang) for lang in ("en", "pt", "de")] + [
        push_template(code="welcome", language=lang) for lang in ("fr", "es", "it")
    ]

    responses = await asyncio.gather(
        *[api.request("POST", f"{BASE}/", json=body) for body in bodies]
    )

    created = {r.json()["data"]["type"] for r in responses if r.status_code == 201}
    refused = {r.json()["error"] for r in responses if r.status_code != 201}
    assert len(created) == 1
    assert refused <= {"type_mismatch"}
    assert sum(r.status_code == 201 for r in responses) == 3


async def test_concurrent_updates_get_distinct_version_numbers(api: TemplateApi) -> None:
    await api.create(push_template())

    responses = await asyncio.gather(
        *[api.request("PUT", f"{BASE}/welcome_push", json={"content": f"c{i}"}) for i in range(8)]
    )

    assert [r.status_code for r in responses] == [200] * 8
    assert sorted(r.json()["data"]["version"] for r in responses) == list(range(2, 10))
    current = (await api.request("GET", f"{BASE}/welcome_push")).json()["data"]
    assert current["version"] == 9


async def test_get_returns_the_active_version(api: TemplateApi) -> None:
    await api.create(email_template())

    response = await api.request("GET", f"{BASE}/welcome", role="service")

    assert response.status_code == 200
    assert response.json()["data"]["version"] == 1


async def test_unknown_code_is_404_template_not_found(api: TemplateApi) -> None:
    response = await api.request("GET", f"{BASE}/nothing_here")
    assert response.status_code == 404
    assert response.json()["error"] == "template_not_found"


async def test_update_creates_a_new_active_version_and_keeps_the_old(api: TemplateApi) -> None:
    await api.create(email_template())

    data = await api.update(
        "welcome", {"subject": "Hello again, {{ name }}", "change_note": "friendlier"}
    )

    assert (data["version"], data["active_version"], data["is_active"]) == (2, 2, True)
    assert data["subject"] == "Hello again, {{ name }}"
    assert data["content"] == email_template()["content"]  # copied from version 1
    assert data["change_note"] == "friendlier"
    old = (await api.request("GET", f"{BASE}/welcome/versions/1")).json()["data"]
    assert old["subject"] == "Welcome, {{ name }}!"
    assert old["is_active"] is False


async def test_update_without_activation_keeps_the_active_version(api: TemplateApi) -> None:
    await api.create(email_template())

    data = await api.update("welcome", {"subject": "Draft", "activate": False})

    assert (data["version"], data["active_version"], data["is_active"]) == (2, 1, False)
    current = (await api.request("GET", f"{BASE}/welcome")).json()["data"]
    assert (current["version"], current["subject"]) == (1, "Welcome, {{ name }}!")


async def test_update_with_nothing_to_change_is_422(api: TemplateApi) -> None:
    await api.create(email_template())

    response = await api.request("PUT", f"{BASE}/welcome", json={"activate": True})

    assert response.status_code == 422
    assert response.json()["error"] == "no_changes"


async def test_update_refuses_fields_of_the_other_channel(api: TemplateApi) -> None:
    await api.create(email_template())

    response = await api.request("PUT", f"{BASE}/welcome", json={"image": "https://x/y.png"})

    assert response.status_code == 422
    assert "image" in response.json()["message"]


async def test_update_can_clear_the_text_part(api: TemplateApi) -> None:
    await api.create(email_template(text="Hi {{ name }} (text)"))

    data = await api.update("welcome", {"text": None})

    assert data["text"] is None
    rendered = await api.render("welcome", {"name": "Ana", "link": "https://x.io"})
    assert rendered.json()["data"]["text"] == "Hello Ana,\n\nGet started (https://x.io)"


async def test_update_acts_on_exactly_the_given_language(api: TemplateApi) -> None:
    await api.create(email_template())
    await api.create(email_template(language="pt", subject="Olá {{ name }}"))

    await api.update("welcome", {"subject": "Oi {{ name }}"}, language="pt")

    en = (await api.request("GET", f"{BASE}/welcome", params={"language": "en"})).json()
    pt = (await api.request("GET", f"{BASE}/welcome", params={"language": "pt"})).json()
    assert (en["data"]["version"], en["data"]["subject"]) == (1, "Welcome, {{ name }}!")
    assert (pt["data"]["version"], pt["data"]["subject"]) == (2, "Oi {{ name }}")
    missing = await api.request(
        "PUT", f"{BASE}/welcome", params={"language": "pt-BR"}, json={"subject": "x"}
    )
    assert missing.status_code == 404


async def test_push_accepts_subject_as_the_title(api: TemplateApi) -> None:
    body = push_template()
    del body["title"]
    data = await api.create({**body, "subject": "Hey {{ name }}"})
    assert (data["title"], data["subject"]) == ("Hey {{ name }}", None)

    updated = await api.update("welcome_push", {"subject": "Yo {{ name }}"})
    assert (updated["title"], updated["subject"]) == ("Yo {{ name }}", None)


async def test_versions_are_listed_newest_first_with_pagination(api: TemplateApi) -> None:
    await api.create(push_template())
    for n in range(2, 6):
        await api.update("welcome_push", {"content": f"Body {n} for {{{{ name }}}}"})

    page1 = (await api.request("GET", f"{BASE}/welcome_push/versions", params={"limit": 2})).json()
    page3 = (
        await api.request("GET", f"{BASE}/welcome_push/versions", params={"limit": 2, "page": 3})
    ).json()

    assert [v["version"] for v in page1["data"]] == [5, 4]
    assert [v["is_active"] for v in page1["data"]] == [True, False]
    assert page1["meta"] == {
        "total": 5,
        "limit": 2,
        "page": 1,
        "total_pages": 3,
        "has_next": True,
        "has_previous": False,
    }
    assert [v["version"] for v in page3["data"]] == [1]
    assert page3["meta"]["has_next"] is False
    assert page3["meta"]["has_previous"] is True


async def test_unknown_version_is_404_version_not_found(api: TemplateApi) -> None:
    await api.create(push_template())

    read = await api.request("GET", f"{BASE}/welcome_push/versions/9")
    activate = await api.request("POST", f"{BASE}/welcome_push/versions/9/activate")
    render = await api.render("welcome_push", {"name": "A"}, version=9)

    for response in (read, activate, render):
        assert response.status_code == 404
        assert response.json()["error"] == "version_not_found"


@pytest.mark.parametrize("version", ["0", "-1", "abc", str(2**40)])
async def test_out_of_range_version_is_422_not_500(shared_api: TemplateApi, version: str) -> None:
    code = unique_code()
    await shared_api.create(push_template(code))
    response = await shared_api.request("GET", f"{BASE}/{code}/versions/{version}")
    assert response.status_code == 422


async def test_activate_rolls_back_and_forward(api: TemplateApi) -> None:
    await api.create(push_template(content="v1 {{ name }}"))
    await api.update("welcome_push", {"content": "v2 {{ name }}"})
    await api.update("welcome_push", {"content": "v3 {{ name }}"})

    rollback = await api.request("POST", f"{BASE}/welcome_push/versions/1/activate")

    assert rollback.status_code == 200
    assert rollback.json()["data"]["active_version"] == 1
    rendered = await api.render("welcome_push", {"name": "Ana", "avatar": "a", "link": "l"})
    assert rendered.json()["data"]["body"] == "v1 Ana"
    assert rendered.json()["data"]["version"] == 1

    # a new version after a rollback gets the next number and copies the active (old) one
    data = await api.update("welcome_push", {"title": "T {{ name }}"})
    assert (data["version"], data["content"]) == (4, "v1 {{ name }}")

    forward = await api.request("POST", f"{BASE}/welcome_push/versions/3/activate")
    assert forward.json()["data"]["content"] == "v3 {{ name }}"
    current = (await api.request("GET", f"{BASE}/welcome_push")).json()["data"]
    assert (current["version"], current["active_version"]) == (3, 3)


async def test_exactly_one_version_is_active(api: TemplateApi) -> None:
    await api.create(push_template())
    for n in range(3):
        await api.update("welcome_push", {"content": f"v{n}"}, language="en")
    await api.request("POST", f"{BASE}/welcome_push/versions/2/activate")

    versions = (await api.request("GET", f"{BASE}/welcome_push/versions")).json()["data"]

    assert [v["version"] for v in versions if v["is_active"]] == [2]


@pytest.mark.parametrize(
    ("requested", "served", "fallback"),
    [
        ("pt-BR", "pt-BR", False),
        ("pt-br", "pt-BR", False),
        ("pt", "pt", False),
        ("pt-PT", "pt", True),
        ("es", "en", True),
        ("es-MX", "en", True),
        (None, "en", False),
    ],
)
async def test_language_fallback(
    api: TemplateApi, requested: str | None, served: str, fallback: bool
) -> None:
    await api.create(email_template(subject="EN {{ name }}"))
    await api.create(email_template(language="pt", subject="PT {{ name }}"))
    await api.create(email_template(language="pt-BR", subject="BR {{ name }}"))
    params = {"language": requested} if requested else {}

    data = (await api.request("GET", f"{BASE}/welcome", params=params)).json()["data"]
    rendered = await api.render("welcome", {"name": "Ana", "link": "https://x"}, language=requested)

    assert data["language"] == served
    assert data["fallback"] is fallback
    assert rendered.json()["data"]["language"] == served
    assert rendered.json()["data"]["subject"].startswith(
        {"en": "EN", "pt": "PT", "pt-BR": "BR"}[served]
    )


async def test_fallback_chain_pt_br_to_pt_to_en(api: TemplateApi) -> None:
    await api.create(email_template(subject="EN"))
    get = lambda: api.render("welcome", {"name": "A", "link": "l"}, language="pt-BR")  # noqa: E731
    assert (await get()).json()["data"]["language"] == "en"

    await api.create(email_template(language="pt", subject="PT"))
    assert (await get()).json()["data"]["language"] == "pt"

    await api.create(email_template(language="pt-BR", subject="BR"))
    assert (await get()).json()["data"]["language"] == "pt-BR"


async def test_without_the_default_language_the_first_created_is_used(api: TemplateApi) -> None:
    await api.create(push_template(language="fr", title="FR"))
    await api.create(push_template(language="de", title="DE"))

    response = await api.request("GET", f"{BASE}/welcome_push", params={"language": "ja"})

    data = response.json()["data"]
    assert (data["language"], data["requested_language"], data["fallback"]) == ("fr", "ja", True)


async def test_list_filters_and_paginates(api: TemplateApi) -> None:
    for code in ("alpha_mail", "beta_mail", "gamma_mail"):
        await api.create(email_template(code=code))
    await api.create(email_template(code="beta_mail", language="pt"))
    for code in ("alpha_push", "order_push"):
        await api.create(push_template(code=code))

    async def codes(**params: object) -> list[tuple[str, str]]:
        response = await api.request("GET", f"{BASE}/", role="service", params=params)
        assert response.status_code == 200
        return [(t["code"], t["language"]) for t in response.json()["data"]]

    assert await codes(type="push") == [("alpha_push", "en"), ("order_push", "en")]
    assert await codes(language="pt") == [("beta_mail", "pt")]
    assert await codes(code="alpha") == [("alpha_mail", "en"), ("alpha_push", "en")]
    assert await codes(code="_mail", type="email", language="en") == [
        ("alpha_mail", "en"),
        ("beta_mail", "en"),
        ("gamma_mail", "en"),
    ]
    assert await codes(code="%") == []  # LIKE wildcards are literal
    page = (await api.request("GET", f"{BASE}/", params={"limit": 4, "page": 2})).json()
    assert [(t["code"], t["language"]) for t in page["data"]] == [
        ("gamma_mail", "en"),
        ("order_push", "en"),
    ]
    assert page["meta"] == {
        "total": 6,
        "limit": 4,
        "page": 2,
        "total_pages": 2,
        "has_next": False,
        "has_previous": True,
    }


async def test_list_shows_the_active_version(api: TemplateApi) -> None:
    await api.create(push_template(name="First"))
    await api.update("welcome_push", {"name": "Second"})
    await api.update("welcome_push", {"name": "Draft", "activate": False})

    item = (await api.request("GET", f"{BASE}/")).json()["data"][0]

    assert (item["version"], item["name"]) == (2, "Second")


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"page": 0}, {"type": "fax"}, {"language": "1"}]
)
async def test_list_rejects_bad_query_parameters(
    shared_api: TemplateApi, params: dict[str, object]
) -> None:
    response = await shared_api.request("GET", f"{BASE}/", params=params)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


async def test_a_page_far_beyond_the_end_is_empty(api: TemplateApi) -> None:
    await api.create(push_template())
    response = await api.request("GET", f"{BASE}/", params={"page": MAX_PAGE})
    assert response.status_code == 200
    assert response.json()["data"] == []


async def test_delete_hides_one_language_and_allows_recreating_it(api: TemplateApi) -> None:
    await api.create(email_template())
    await api.create(email_template(language="pt", subject="PT"))
    await api.update("welcome", {"subject": "PT 2"}, language="pt")

    deleted = await api.request("DELETE", f"{BASE}/welcome", params={"language": "pt"})

    assert deleted.status_code == 200
    assert deleted.json()["data"] is None
    fallback = (await api.request("GET", f"{BASE}/welcome", params={"language": "pt"})).json()
    assert fallback["data"]["language"] == "en"
    again = await api.request("DELETE", f"{BASE}/welcome", params={"language": "pt"})
    assert again.status_code == 404
    recreated = await api.create(email_template(language="pt", subject="PT new"))
    assert recreated["version"] == 1


async def test_deleting_every_language_makes_the_code_unknown(api: TemplateApi) -> None:
    await api.create(push_template())

    await api.request("DELETE", f"{BASE}/welcome_push")

    render = await api.render("welcome_push", {"name": "A"})
    assert render.status_code == 404
    assert render.json()["error"] == "template_not_found"
    listed = (await api.request("GET", f"{BASE}/")).json()
    assert listed["data"] == []
    assert listed["meta"]["total"] == 0


async def test_unknown_route_and_method_use_the_envelope(shared_api: TemplateApi) -> None:
    missing = await shared_api.request("GET", "/api/v1/nothing")
    wrong_method = await shared_api.request("PATCH", f"{BASE}/welcome")

    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "method_not_allowed")


async def test_oversized_body_is_413(shared_api: TemplateApi) -> None:
    huge = email_template(unique_code(), content="x" * 70_000)
    response = await shared_api.request("POST", f"{BASE}/", json=huge)
    assert response.status_code == 413
    assert response.json()["success"] is False


async def test_health_and_readiness(shared_api: TemplateApi) -> None:
    health = await shared_api.request("GET", "/health", role=None)
    ready = await shared_api.request("GET", "/ready", role=None)

    assert health.status_code == 200
    assert ready.status_code == 200
    assert set(ready.json()["data"]["checks"]) == {"postgres", "redis"}


async def test_openapi_documents_every_route(shared_api: TemplateApi) -> None:
    spec = (await shared_api.request("GET", "/openapi.json", role=None)).json()

    assert {
        "/api/v1/templates/",
        "/api/v1/templates/preview",
        "/api/v1/templates/{code}",
        "/api/v1/templates/{code}/versions",
        "/api/v1/templates/{code}/versions/{version}",
        "/api/v1/templates/{code}/versions/{version}/activate",
        "/api/v1/templates/{code}/render",
    } <= set(spec["paths"])


async def test_cache_version_is_bumped_after_each_committed_change(
    api: TemplateApi, redis: Redis, keys: Keys
) -> None:
    key = keys.cache_version("template", "welcome")

    async def version() -> int:
        raw = await redis.get(key)
        return int(raw) if raw is not None else 0

    seen = [await version()]
    assert seen == [0]

    async def bumped() -> bool:
        seen.append(await version())
        return seen[-1] > seen[-2]

    await api.create(email_template())
    assert await bumped()
    await api.create(email_template(language="pt"))
    assert await bumped()
    await api.update("welcome", {"subject": "New"})
    assert await bumped()
    await api.update("welcome", {"subject": "Draft", "activate": False})
    assert await bumped()
    await api.request("POST", f"{BASE}/welcome/versions/1/activate")
    assert await bumped()
    await api.request("DELETE", f"{BASE}/welcome", params={"language": "pt"})
    assert await bumped()

    # refused or no-op changes do not bump
    await api.request("POST", f"{BASE}/", json=email_template())  # 409
    await api.request("PUT", f"{BASE}/welcome", json={"content": "{{ broken"})  # 400
    await api.request("POST", f"{BASE}/welcome/versions/1/activate")  # already active
    await api.render("welcome", {"name": "A", "link": "l"})
    assert not await bumped()
    assert 0 < await redis.ttl(key) <= 7 * 86400


async def test_a_nul_character_in_a_template_is_422_not_500(api: TemplateApi) -> None:
    # found by the fuzz tier (tests/fuzz): PostgreSQL cannot store NUL, and the error was a 500
    response = await api.request(
        "POST", f"{BASE}/", json=email_template(code=unique_code(), content="<p>a\x00b</p>")
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_value"
