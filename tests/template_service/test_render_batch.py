"""Many renders in one call (what delivery services send), and no database query per render."""

from __future__ import annotations

from sqlalchemy import event

from template_service.state import TemplateServiceState
from tests.support.servers import AppClient
from tests.template_service.conftest import TemplateApi
from tests.template_service.factories import email_template, push_template

VARIABLES = {"name": "Ada", "link": "https://herald.test/start"}


async def _batch(api: TemplateApi, items: list[dict[str, object]]):
    return await api.request("POST", "/api/v1/renders", json={"items": items})


async def test_a_batch_answers_each_item_in_order_with_its_own_errors(api: TemplateApi) -> None:
    await api.create(email_template())
    await api.create(push_template())
    response = await _batch(
        api,
        [
            {"code": "welcome", "variables": VARIABLES},
            {"code": "nope", "variables": VARIABLES},
            {"code": "welcome", "variables": {"name": "Ada"}},  # no link
            {"code": "welcome_push", "variables": {**VARIABLES, "avatar": "ada"}},
        ],
    )
    assert response.status_code == 200, response.text
    first, missing, incomplete, push = response.json()["data"]
    assert first["ok"] is True
    assert first["result"]["subject"] == "Welcome, Ada!"
    assert (missing["ok"], missing["error"]) == (False, "template_not_found")
    assert (incomplete["ok"], incomplete["error"]) == (False, "missing_variable")
    assert "link" in incomplete["message"]
    assert push["result"]["type"] == "push"


async def test_a_batch_is_bounded_and_for_services_only(api: TemplateApi) -> None:
    too_many: list[dict[str, object]] = [{"code": "welcome", "variables": VARIABLES}] * 501
    assert (await _batch(api, too_many)).status_code == 422
    as_user = await api.request(
        "POST", "/api/v1/renders", json={"items": too_many[:1]}, role="user"
    )
    assert as_user.status_code == 403


async def test_renders_read_the_database_only_after_a_change(
    api: TemplateApi, client: AppClient
) -> None:
    await api.create(email_template())
    state: TemplateServiceState = client.state
    queries: list[str] = []
    event.listen(
        state.engine.sync_engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_: queries.append(statement),
    )
    await api.render("welcome", VARIABLES)  # loads the active version once
    loaded = len(queries)
    for _ in range(5):
        assert (await api.render("welcome", VARIABLES)).status_code == 200
    assert len(queries) == loaded  # from memory while the template is unchanged

    await api.update("welcome", {"subject": "Hello again, {{ name }}"})
    changed = await api.render("welcome", VARIABLES)
    assert changed.json()["data"]["subject"] == "Hello again, Ada"  # the next render sees it
