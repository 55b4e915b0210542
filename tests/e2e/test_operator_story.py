"""The operator's story, end to end: every service a process, the command line a process too.

A relay refuses mail (451 to everything); the notifications exhaust their retries and land in the
DLQ with the reason. The relay is fixed. The operator logs in from the command line and
republishes by filter: each message is delivered exactly once, and the audit trail names the
operator for every republish.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.support.cli import herald_dlq as run_cli
from tests.support.system import ADMIN, System, running_system

pytestmark = pytest.mark.e2e

COUNT = 8


async def herald_dlq(system: System, *args: str, token: str = "") -> tuple[int, str, str]:
    """The command line as an operator runs it, against this system's URLs."""
    env = {
        "HERALD_DLQ_URL": system.url("dlq_service"),
        "HERALD_USER_SERVICE_URL": system.url("user_service"),
        "HERALD_TOKEN": token,
        "HERALD_PASSWORD": ADMIN["password"],
    }
    return await run_cli(env, *args)


async def _dlq(system: System, **params: Any) -> dict[str, Any]:
    response = await system.http.get(
        f"{system.url('dlq_service')}/api/v1/failed/",
        params={"limit": 100, **params},
        headers=await system.admin(),
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_relay_refuses_then_is_fixed_and_a_cli_bulk_republish_delivers_each_once(
    vhost_pool, tmp_path
):
    # a breaker that never opens: every retry reaches the relay, so the ladder ends in the DLQ
    patient = {"BREAKER_FAILURE_THRESHOLD": "1000"}
    async with running_system(vhost_pool, tmp_path, env=patient) as system:
        code = f"story-{uuid.uuid4().hex[:6]}"
        await system.create_template(
            code=code, name="Story", type="email", subject="Hi {{ name }}", content="<p>hi</p>"
        )
        user = await system.register_user()

        # 1. the relay refuses mail: every notification ends in the DLQ, with the reason
        system.sink.handler.mode = "tempfail"
        sent = []
        for i in range(COUNT):
            response = await system.send(
                notification_type="email",
                user_id=user["id"],
                template_code=code,
                variables={"name": f"n{i}"},
            )
            assert response.status_code == 202, response.text
            sent.append(response.json()["data"]["notification_id"])
        for nid in sent:
            record = await system.wait_status(nid, "failed", timeout=60)
            assert record["attempts"] == 4  # the first try and three retries
        deadline = time.monotonic() + 30
        while (listed := await _dlq(system))["meta"]["total"] < COUNT:
            assert time.monotonic() < deadline, listed["meta"]
            await asyncio.sleep(0.2)
        rows = listed["data"]
        assert {r["notification_id"] for r in rows} == set(sent)
        assert {r["reason"] for r in rows} == {"retries_exhausted"}
        assert all("451" in r["error"] for r in rows)
        assert {r["provider"] for r in rows} == {"smtp"}
        assert system.sink.handler.counts() == {}

        # 2. the relay is fixed; the operator logs in and republishes by filter from the CLI
        system.sink.handler.mode = "accept"
        code_, out, err = await herald_dlq(system, "login", "--email", ADMIN["email"])
        assert code_ == 0, err
        assert out.startswith("export HERALD_TOKEN=")
        token = out.strip().removeprefix("export HERALD_TOKEN=")
        code_, out, err = await herald_dlq(
            system,
            "republish",
            "--reason",
            "retries_exhausted",
            "--channel",
            "email",
            "--yes",
            "--page-size",
            "3",
            token=token,
        )
        assert code_ == 0, err
        assert f"Republished {COUNT} of {COUNT}." in out
        assert "Republishing" in err  # the progress bar (on stderr, beside the tables)

        # 3. each message delivered exactly once
        deadline = time.monotonic() + 60
        while set(system.sink.handler.counts()) < set(sent):
            assert time.monotonic() < deadline, system.sink.handler.counts()
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # time for a duplicate to show up, if there were one
        counts = system.sink.handler.counts()
        assert {nid: counts[nid] for nid in sent} == dict.fromkeys(sent, 1)
        for nid in sent:
            record = await system.wait_status(nid, "delivered")
            assert "republished" in [e["event"] for e in record["timeline"]]

        # 4. nothing is left, and the audit trail says who republished what
        code_, out, _ = await herald_dlq(
            system, "republish", "--reason", "retries_exhausted", "--yes", token=token
        )
        assert (code_, "Nothing to republish" in out) == (0, True)
        me = await system.http.get(
            f"{system.url('user_service')}/api/v1/users/me", headers=await system.admin()
        )
        admin_id = me.json()["data"]["id"]
        for row in (await _dlq(system, state="all"))["data"]:
            detail = await system.http.get(
                f"{system.url('dlq_service')}/api/v1/failed/{row['id']}",
                headers=await system.admin(),
            )
            events = [(e["action"], e["actor"]) for e in detail.json()["data"]["events"]]
            assert events == [("received", "system"), ("republished", admin_id)], events
        code_, out, _ = await herald_dlq(system, "show", rows[0]["id"], token=token)
        assert code_ == 0
        assert admin_id in out
        assert "republished" in out
