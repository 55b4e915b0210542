"""The console's pages over HTTP (in-process): login, session cookie, CSRF, the list, the detail
view, actions and the live feed. The browser test (tests/e2e/test_console_browser.py) drives the
same pages in Chromium against the whole system."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from dlq_service.console.sessions import LOGIN_COOKIE, SESSION_COOKIE
from libs.messaging import headers as H
from libs.messaging.topology import work_queue
from libs.notification.message import Channel
from libs.storage.status_store import RedisStatusStore
from tests.dlq_service.conftest import ACCOUNTS
from tests.dlq_service.helpers import (
    ADMIN_SUB,
    Harness,
    eventually,
    failed_status,
    failure_headers,
    incoming,
    notification,
    queue_depth,
)

ADMIN_EMAIL = "admin@herald.test"


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} field in the page"
    return found.group(1)


async def _login(
    client: httpx.AsyncClient, email: str = ADMIN_EMAIL, password: str | None = None
) -> httpx.Response:
    form = await client.get("/login")
    assert form.status_code == 200
    return await client.post(
        "/login",
        data={
            "email": email,
            "password": password if password is not None else ACCOUNTS[email][0],
            "login_token": _field(form.text, "login_token"),
            "next": "/",
        },
    )


@pytest.fixture
async def console(dlq: Harness) -> httpx.AsyncClient:
    """The in-process client, logged in to the console as the admin."""
    response = await _login(dlq.client)
    assert response.status_code == 303, response.text
    return dlq.client


async def _csrf(client: httpx.AsyncClient, path: str = "/") -> str:
    return _field((await client.get(path)).text, "csrf_token")


async def test_pages_need_a_session_and_send_you_to_log_in(dlq: Harness) -> None:
    response = await dlq.client.get("/?reason=permanent_error")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2F%3Freason%3Dpermanent_error"
    login = await dlq.client.get("/login")
    assert "Operator login" in login.text
    cookie = login.headers["set-cookie"]
    assert LOGIN_COOKIE in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert login.headers["content-security-policy"].startswith("default-src 'self'")
    live = await dlq.client.get("/console/live")
    assert live.status_code == 401
    assert live.json()["error"] == "login_required"


async def test_login_opens_an_httponly_samesite_session(dlq: Harness) -> None:
    response = await _login(dlq.client)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie  # ENVIRONMENT=test serves plain HTTP
    page = await dlq.client.get("/")
    assert page.status_code == 200
    assert ADMIN_EMAIL in page.text


@pytest.mark.parametrize(
    ("email", "password", "status", "says"),
    [
        (ADMIN_EMAIL, "wrong-password", 401, "Wrong email or password."),
        ("nobody@herald.test", "whatever-1", 401, "Wrong email or password."),
        ("client@herald.test", None, 403, "needs the admin role"),
    ],
)
async def test_wrong_password_or_a_non_admin_is_refused(
    dlq: Harness, email: str, password: str | None, status: int, says: str
) -> None:
    response = await _login(dlq.client, email, password)
    assert response.status_code == status
    assert says in response.text
    assert f"{SESSION_COOKIE}=" not in response.headers.get("set-cookie", "")
    assert (await dlq.client.get("/")).status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "https://evil.example"])
async def test_login_never_redirects_to_another_site(dlq: Harness, target: str) -> None:
    form = await dlq.client.get("/login")
    response = await dlq.client.post(
        "/login",
        data={
            "email": ADMIN_EMAIL,
            "password": ACCOUNTS[ADMIN_EMAIL][0],
            "login_token": _field(form.text, "login_token"),
            "next": target,
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


async def test_a_login_form_without_its_token_is_refused(dlq: Harness) -> None:
    await dlq.client.get("/login")
    response = await dlq.client.post(
        "/login",
        data={"email": ADMIN_EMAIL, "password": ACCOUNTS[ADMIN_EMAIL][0], "login_token": "x"},
    )
    assert response.status_code == 403
    assert (await dlq.client.get("/")).status_code == 303


async def test_a_forged_session_cookie_is_not_a_session(dlq: Harness) -> None:
    dlq.client.cookies.set(SESSION_COOKIE, "made-up.cookie.value")
    assert (await dlq.client.get("/")).status_code == 303


async def test_the_list_shows_counts_reason_and_filters(
    dlq: Harness, console: httpx.AsyncClient
) -> None:
    user = uuid.uuid4()
    await dlq.service.store(
        incoming(
            notification(user_id=user),
            failure_headers(error="451 4.3.0 Try again later", extra={H.FAILURE_PROVIDER: "smtp"}),
        )
    )
    await dlq.service.store(
        incoming(
            notification(Channel.PUSH),
            failure_headers(
                reason="permanent_error", error="UNREGISTERED token", routing_key="push"
            ),
        )
    )
    page = (await console.get("/")).text
    assert "2 pending failed messages" in page
    assert "Retries exhausted" in page
    assert "Refused for good" in page
    assert "451 4.3.0 Try again later" in page
    assert "UNREGISTERED token" in page
    filtered = (await console.get("/", params={"channel": "push", "provider": ""})).text
    assert "1 pending failed message" in filtered
    assert "UNREGISTERED token" in filtered
    assert "451 4.3.0" not in filtered
    by_provider = (await console.get("/", params={"provider": "smtp"})).text
    assert "451 4.3.0" in by_provider
    by_user = (await console.get("/", params={"user_id": str(user)})).text
    assert "1 pending failed message" in by_user
    bad = await console.get("/", params={"since": "yesterday"})
    assert bad.status_code == 200
    assert "Filter ignored" in bad.text


async def test_an_action_without_the_csrf_token_is_refused(
    dlq: Harness, console: httpx.AsyncClient, amqp
) -> None:
    await dlq.service.store(incoming(notification()))
    row = await dlq.only_row()
    for data in ({}, {"csrf_token": "not-the-token"}):
        response = await console.post(f"/failed/{row['id']}/republish", data=data)
        assert response.status_code == 403
        assert "CSRF" in response.text
    assert (await dlq.only_row())["state"] == "pending"
    assert await queue_depth(amqp, work_queue(Channel.EMAIL)) == 0


async def test_detail_shows_why_and_actions_republish_and_discard_with_audit(
    dlq: Harness, console: httpx.AsyncClient, statuses: RedisStatusStore, amqp
) -> None:
    first, second = notification(), notification()
    await failed_status(statuses, first)
    await dlq.service.store(incoming(first))
    await dlq.service.store(incoming(second, failure_headers(reason="permanent_error")))
    row = await dlq.only_row(notification_id=str(first.notification_id))
    detail = await console.get(f"/failed/{row['id']}")
    assert detail.status_code == 200
    for shown in ("Retries exhausted", "Every attempt failed", "x-failure-reason", "Audit trail"):
        assert shown in detail.text
    assert str(first.variables["name"]) in detail.text  # the payload
    token = _field(detail.text, "csrf_token")

    done = await console.post(f"/failed/{row['id']}/republish", data={"csrf_token": token})
    assert done.status_code == 303
    assert done.headers["location"] == f"/failed/{row['id']}?notice=republished"
    assert await queue_depth(amqp, work_queue(Channel.EMAIL)) == 1
    after = await console.get(done.headers["location"])
    assert "Republished: the message is back on its queue." in after.text
    assert ADMIN_SUB in after.text  # the audit trail names who did it

    other = await dlq.only_row(notification_id=str(second.notification_id))
    empty = await console.post(
        f"/failed/{other['id']}/discard", data={"csrf_token": token, "reason": "  "}
    )
    assert empty.status_code == 422
    assert "Say why you discard it" in empty.text
    discarded = await console.post(
        f"/failed/{other['id']}/discard",
        data={"csrf_token": token, "reason": "user deleted their account"},
    )
    assert discarded.status_code == 303
    audit = (await dlq.get(f"/api/v1/failed/{other['id']}")).json()["data"]["events"]
    assert [(e["action"], e["actor"], e["reason"]) for e in audit][-1] == (
        "discarded",
        ADMIN_SUB,
        "user deleted their account",
    )
    assert "user deleted their account" in (await console.get(f"/failed/{other['id']}")).text


async def test_republish_selected_and_everything_matching_after_seeing_the_count(
    dlq: Harness, console: httpx.AsyncClient, amqp
) -> None:
    for _ in range(3):
        await dlq.service.store(incoming(notification()))
    await dlq.service.store(incoming(notification(), failure_headers(reason="permanent_error")))
    rows = (await dlq.get("/api/v1/failed/", params={"reason": "retries_exhausted"})).json()["data"]
    token = await _csrf(console)
    selected = await console.post(
        "/republish/selected",
        data={"csrf_token": token, "ids": [rows[0]["id"]], "back": "/?reason=retries_exhausted"},
    )
    assert selected.status_code == 303
    assert selected.headers["location"].startswith("/?reason=retries_exhausted&notice=")
    assert await queue_depth(amqp, work_queue(Channel.EMAIL)) == 1

    confirm = await console.get("/republish/matching", params={"reason": "retries_exhausted"})
    assert "Republish 2 messages?" in confirm.text
    form = {
        "csrf_token": _field(confirm.text, "csrf_token"),
        "as_of": _field(confirm.text, "as_of"),
        "expected": _field(confirm.text, "expected"),
        "reason": _field(confirm.text, "reason"),
    }
    await dlq.service.store(incoming(notification()))  # fails after the count: left alone
    started = await console.post("/republish/matching", data=form)
    assert started.status_code == 303
    assert "notice=job_started" in started.headers["location"]

    async def job_finished() -> bool:
        jobs = (await console.get("/console/live")).json()["data"]["jobs"]
        return bool(jobs) and not jobs[0]["running"]

    await eventually(job_finished)
    job = (await console.get("/console/live")).json()["data"]["jobs"][0]
    assert (job["total"], job["republished"]) == (2, 2)
    assert await queue_depth(amqp, work_queue(Channel.EMAIL)) == 3
    # left pending: the message refused for good and the one that failed after the count
    left = await dlq.post("/api/v1/failed/republish/preview", json={"filter": {}})
    assert left.json()["data"]["matching"] == 2


async def test_the_live_feed_follows_each_listed_message_and_its_notification(
    dlq: Harness, console: httpx.AsyncClient, statuses: RedisStatusStore
) -> None:
    message = notification()
    await failed_status(statuses, message)
    await dlq.service.store(incoming(message))
    row = await dlq.only_row()
    live = await console.get("/console/live", params={"ids": f"{row['id']},not-a-uuid"})
    assert live.status_code == 200
    body = live.json()
    assert body["success"] is True
    assert body["data"]["rows"][row["id"]] == {
        "state": "pending",
        "republish_count": 0,
        "notification_status": "failed",
        "attempts": 0,
    }
    assert body["data"]["pending_total"] == 1
    await dlq.post(f"/api/v1/failed/{row['id']}/republish")
    after = (await console.get("/console/live", params={"ids": row["id"]})).json()["data"]
    assert after["rows"][row["id"]]["state"] == "republished"
    assert after["rows"][row["id"]]["notification_status"] == "pending"
    assert after["pending_total"] == 0


async def test_lookup_page_shows_status_and_timeline(
    dlq: Harness, console: httpx.AsyncClient, statuses: RedisStatusStore
) -> None:
    message = notification(request_id="signup-7")
    await failed_status(statuses, message)
    await dlq.service.store(incoming(message))
    page = await console.get("/notifications", params={"q": "signup-7"})
    assert page.status_code == 200
    assert str(message.notification_id) in page.text
    assert "accepted" in page.text
    missing = await console.get("/notifications", params={"q": "nothing-like-it"})
    assert "Nothing found" in missing.text


async def test_logout_ends_the_session(dlq: Harness, console: httpx.AsyncClient) -> None:
    token = await _csrf(console)
    cookie = console.cookies.get(SESSION_COOKIE)
    response = await console.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303
    console.cookies.set(SESSION_COOKIE, cookie or "")  # even a kept cookie no longer works
    assert (await console.get("/")).status_code == 303
