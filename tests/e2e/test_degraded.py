"""Delivery keeps going from cache while the user service is down (a system of its own)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.system import running_system

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def system(vhost_pool, tmp_path_factory):
    async with running_system(vhost_pool, tmp_path_factory.mktemp("degraded")) as running:
        await running.create_template(
            code="deg_mail",
            name="Degraded",
            type="email",
            subject="Hello {{ name }}",
            content="<p>Hi {{ name }}</p>",
        )
        yield running


async def test_delivery_continues_while_the_user_service_is_stopped(system):
    user = await system.register_user()
    cold = {"name": "Cached"}
    first = await system.send(
        notification_type="email", user_id=user["id"], template_code="deg_mail", variables=cold
    )
    await system.wait_status(first.json()["data"]["notification_id"], "delivered")
    admin = await system.admin()  # the gateway keeps verifying with its cached signing keys

    [user_service] = system.stack.find("user_service")
    assert system.stack.stop(user_service)  # graceful
    try:
        warm = await system.send(
            admin,
            notification_type="email",
            user_id=user["id"],
            template_code="deg_mail",
            variables={"name": "Still works"},
        )
        assert warm.status_code == 202, warm.text
        record = await system.wait_status(warm.json()["data"]["notification_id"], "delivered")
        assert record["attempts"] == 1
        # a user never seen before cannot be delivered from cache: it waits in retry, not lost
        stranger = "00000000-0000-4000-8000-000000000042"
        unknown = await system.send(
            admin,
            notification_type="email",
            user_id=stranger,
            template_code="deg_mail",
            variables=cold,
        )
        assert unknown.status_code == 202  # the gateway cannot check either: accept, deliver later
        unknown_id = unknown.json()["data"]["notification_id"]
        await asyncio.sleep(1.5)
        pending = await system.status(unknown_id)
        assert pending["status"] == "processing"
        assert "user_service" in pending["last_error"]
    finally:
        restarted = system.stack.start("user_service")
        await asyncio.to_thread(system.stack.wait_ready, restarted)
    # once the user service is back, the unknown user is found not to exist: failed, with reason
    record = await system.wait_status(unknown_id, {"failed"}, timeout=20)
    assert "user_service" in record["last_error"]


async def test_cached_renders_keep_flowing_while_the_template_service_is_stopped(system):
    user = await system.register_user()
    known = {"name": "Rendered before"}
    first = await system.send(
        notification_type="email", user_id=user["id"], template_code="deg_mail", variables=known
    )
    await system.wait_status(first.json()["data"]["notification_id"], "delivered")
    admin = await system.admin()
    [template_service] = system.stack.find("template_service")
    assert system.stack.stop(template_service)
    try:
        cached = await system.send(
            admin,
            notification_type="email",
            user_id=user["id"],
            template_code="deg_mail",
            variables=known,
        )
        await system.wait_status(cached.json()["data"]["notification_id"], "delivered")
        fresh = await system.send(
            admin,
            notification_type="email",
            user_id=user["id"],
            template_code="deg_mail",
            variables={"name": "Never rendered"},
        )
        fresh_id = fresh.json()["data"]["notification_id"]
        await asyncio.sleep(1.5)
        waiting = await system.status(fresh_id)
        assert waiting["status"] == "processing"  # retried, not lost, not failed
        assert "template_service" in waiting["last_error"]
    finally:
        restarted = system.stack.start("template_service")
        await asyncio.to_thread(system.stack.wait_ready, restarted)
    await system.wait_status(fresh_id, "delivered", timeout=20)
    subjects = {m.subject for m in system.sink.handler.snapshot()}
    assert {"Hello Rendered before", "Hello Never rendered"} <= subjects
