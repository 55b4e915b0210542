"""The operator console in a real browser (headless Chromium) against the whole system.

The relay refuses mail, so notifications land in the DLQ; the operator logs in, sees why, filters,
republishes one (the sink receives it once, and the list shows it delivered), discards another
with a reason (the audit trail shows it); a wrong password and an action without the CSRF token
are refused. A second test renders the page at a desktop and a phone size: nothing overflows
sideways, and the screenshots are saved (to ``HERALD_CONSOLE_SCREENSHOTS`` when set: that is how
the ones in docs/ are made).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from playwright.async_api import Page, ViewportSize, expect

from libs.messaging import headers as H
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, FAILED_ROUTING_KEY
from tests.support.amqp import publish_raw
from tests.support.browser import chromium
from tests.support.system import ADMIN, System, running_system

pytestmark = pytest.mark.e2e

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


async def _setup(system: System) -> tuple[str, list[dict[str, Any]]]:
    code = f"console-{uuid.uuid4().hex[:6]}"
    await system.create_template(
        code=code,
        name="Console",
        type="email",
        subject="Hello {{ name }}",
        content="<p>Hello {{ name }}</p>",
    )
    users = [await system.register_user(name=name) for name in ("Ada", "Grace")]
    return code, users


async def _send(system: System, user: dict[str, Any], code: str) -> str:
    response = await system.send(
        notification_type="email", user_id=user["id"], template_code=code, variables={"name": "x"}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["notification_id"])


async def _failed(system: System, total: int, timeout: float = 30) -> list[dict[str, Any]]:
    """Wait until the DLQ holds ``total`` messages (any state); returns them."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        response = await system.http.get(
            f"{system.url('dlq_service')}/api/v1/failed/",
            params={"state": "all", "limit": 100},
            headers=await system.admin(),
        )
        rows = response.json()["data"]
        if len(rows) >= total:
            return rows
        await asyncio.sleep(0.2)
    raise AssertionError(f"{len(rows)} of {total} failed messages stored after {timeout}s")


async def _log_in(page: Page, base: str, password: str = ADMIN["password"]) -> None:
    await page.goto(f"{base}/")
    await page.get_by_label("Email").fill(ADMIN["email"])
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()


async def test_an_operator_replays_one_failure_and_discards_another_in_the_browser(
    vhost_pool, tmp_path
):
    async with running_system(vhost_pool, tmp_path) as system, chromium() as browser:
        code, (ada, grace) = await _setup(system)
        system.sink.handler.mode = "reject"  # the relay refuses every recipient: 550
        first = await _send(system, ada, code)
        second = await _send(system, grace, code)
        third = await _send(system, grace, code)
        rows = await _failed(system, 3)
        by_notification = {r["notification_id"]: r for r in rows}
        system.sink.handler.mode = "accept"  # the relay is fixed
        base = system.url("dlq_service")
        page = await (await browser.new_context(viewport=DESKTOP)).new_page()

        # a wrong password is refused, and nothing opens
        await _log_in(page, base, password="not-the-password")
        await expect(page.get_by_role("alert")).to_contain_text("Wrong email or password.")
        assert "/login" in page.url

        await _log_in(page, base)
        await expect(page.get_by_role("heading", name="3 pending failed messages")).to_be_visible()
        await expect(page.locator("table.failed")).to_contain_text("Refused for good")
        await expect(page.locator("table.failed")).to_contain_text("550")

        # filter by the first user: one message
        await page.get_by_label("User id").fill(ada["id"])
        await page.get_by_role("button", name="Filter").click()
        await expect(page.get_by_role("heading", name="1 pending failed message")).to_be_visible()
        row = page.locator(f'tr[data-id="{by_notification[first]["id"]}"]')
        await expect(row).to_be_visible()

        # republish it: the sink receives it once, and the list follows it to delivered
        await row.get_by_role("checkbox").check()
        await page.get_by_role("button", name="Republish 1 selected").click()
        await expect(page.locator(".notice")).to_contain_text("Republished 1 message(s).")
        await expect(row.locator('[data-field="notification"]')).to_have_text(
            "delivered", timeout=20_000
        )
        await expect(row.locator('[data-field="state"]')).to_have_text("republished")
        await asyncio.sleep(1)
        assert system.sink.handler.counts()[first] == 1
        assert second not in system.sink.handler.counts()

        # discard the second with a reason: the audit trail shows who and why
        await page.goto(f"{base}/failed/{by_notification[second]['id']}")
        await expect(page.locator(".explain")).to_contain_text("refused this message")
        await page.get_by_label("Why discard it?").fill("user asked us to stop")
        await page.get_by_role("button", name="Discard").click()
        await expect(page.locator(".notice")).to_contain_text("Discarded")
        audit = page.locator("table.audit")
        await expect(audit).to_contain_text("discarded")
        await expect(audit).to_contain_text("user asked us to stop")
        await expect(audit).to_contain_text("(you)")

        # an action without the CSRF token is refused, with the session's own cookie
        refused = await page.request.post(
            f"{base}/failed/{by_notification[third]['id']}/republish", form={}
        )
        assert refused.status == 403
        assert "CSRF" in await refused.text()
        still = await system.http.get(
            f"{base}/api/v1/failed/{by_notification[third]['id']}", headers=await system.admin()
        )
        assert still.json()["data"]["state"] == "pending"
        assert third not in system.sink.handler.counts()


async def _poison(system: System, reason: str, error: str, provider: str | None = None) -> None:
    """A failure as a delivery service dead-letters it (for a varied page)."""
    headers = {
        H.FAILURE_REASON: reason,
        H.FAILURE_ERROR: error,
        H.FAILURE_ERROR_CLASS: "TransientProviderError",
        H.FAILURE_SERVICE: "push_service",
        H.ORIGINAL_ROUTING_KEY: "push",
        H.ATTEMPTS: 3,
    }
    if provider:
        headers[H.FAILURE_PROVIDER] = provider
    connection = await aio_pika.connect_robust(system.env["RABBITMQ_URL"])
    try:
        await publish_raw(
            connection,
            DEAD_LETTER_EXCHANGE,
            FAILED_ROUTING_KEY,
            b'{"notification_type": "push", "request_id": "r-1"}',
            headers=headers,
            message_id=f"poison-{uuid.uuid4().hex[:8]}",
        )
    finally:
        await connection.close()


async def test_the_console_reads_at_a_desktop_and_a_phone_width(vhost_pool, tmp_path):
    shots = Path(os.environ.get("HERALD_CONSOLE_SCREENSHOTS") or tmp_path)
    # a breaker that never opens: every retry reaches the relay, so the ladder ends in the DLQ fast
    patient = {"BREAKER_FAILURE_THRESHOLD": "1000"}
    async with (
        running_system(vhost_pool, tmp_path, env=patient) as system,
        chromium() as browser,
    ):
        code, (ada, grace) = await _setup(system)
        system.sink.handler.mode = "tempfail"  # 451 on every try: retries exhausted
        for user in (ada, grace, ada, grace, ada):
            await _send(system, user, code)
        await _failed(system, 5, timeout=60)
        system.sink.handler.mode = "reject"
        await _send(system, grace, code)
        await _poison(system, "invalid_message", "ValidationError: user_id: Field required")
        rows = await _failed(system, 7, timeout=60)
        system.sink.handler.mode = "accept"
        base = system.url("dlq_service")
        one = next(r for r in rows if r["reason"] == "retries_exhausted")

        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page = await (await browser.new_context(viewport=viewport)).new_page()
            await _log_in(page, base)
            await expect(
                page.get_by_role("heading", name="7 pending failed messages")
            ).to_be_visible()
            await _fits(page)
            await page.screenshot(path=str(shots / f"console-{name}.png"))
            await page.goto(f"{base}/failed/{one['id']}")
            await expect(page.locator(".explain")).to_contain_text("temporary error")
            await _fits(page)
            await page.screenshot(path=str(shots / f"console-{name}-detail.png"))
            await page.context.close()


async def _fits(page: Page) -> None:
    """Nothing makes the page scroll sideways (the phone check that matters most)."""
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} is {overflow}px wider than the viewport"
