"""The first run, as a newcomer lives it: the README's commands, pasted as written, work.

The system runs the way ``make run`` starts it (every service a process, the demo user registered
by the launcher's own function); only the addresses differ, since tests take free ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import pytest

from devtools.run import LauncherSettings, register_demo_user, supervise_services
from devtools.smtp_sink import ReceivedMail
from devtools.supervisor import Backoff, Supervisor
from tests.support.pages import asset_urls, external_references
from tests.support.readme import bash_blocks

pytestmark = pytest.mark.e2e

SETTINGS = LauncherSettings.model_construct(
    **{name: field.default for name, field in LauncherSettings.model_fields.items()}
)
TUTORIAL = bash_blocks("Your first notification")


@pytest.fixture(scope="module")
async def demo_user(system):
    return await asyncio.to_thread(register_demo_user, system.url("user_service"), SETTINGS)


def for_this_system(system, script: str) -> str:
    """The README's commands with this system's ports (``make run`` uses 8000 and 8001)."""
    assert "http://127.0.0.1:8000/" in script
    assert "http://127.0.0.1:8001/" in script
    return script.replace("http://127.0.0.1:8000/", f"{system.url('gateway')}/").replace(
        "http://127.0.0.1:8001/", f"{system.url('user_service')}/"
    )


async def run_in_fresh_shell(shell: str, script: str, home) -> str:
    """Run ``script`` under ``shell -e`` with nothing set but PATH and HOME; returns stdout."""
    process = await asyncio.create_subprocess_exec(
        shell,
        "-e",
        "-c",
        script,
        env={"PATH": os.environ["PATH"], "HOME": str(home)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"{shell} failed ({process.returncode}):\n{out!r}\n{err!r}"
    return out.decode()


def printed_answers(stdout: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Step 3 prints the send's answer on one line; step 4 the status, indented over many."""
    first_line, _, rest = stdout.partition("\n")
    return json.loads(first_line), json.loads(rest)


def mails_to(system, address: str) -> list[ReceivedMail]:
    return [m for m in system.sink.handler.snapshot() if address in m.rcpt_tos]


async def wait_for_mails(
    system, address: str, count: int, timeout: float = 20.0
) -> list[ReceivedMail]:
    deadline = time.monotonic() + timeout
    while len(mails := mails_to(system, address)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return mails


async def test_readme_commands_send_a_new_notification_each_time_they_are_pasted(
    system, demo_user, tmp_path
):
    script = for_this_system(system, "\n".join(TUTORIAL))
    sent_ids = []
    for run, shell in enumerate(("bash", "sh"), 1):  # sh is dash here: POSIX only
        sent, status = printed_answers(await run_in_fresh_shell(shell, script, tmp_path))
        assert sent["success"] is True
        assert sent["data"]["status"] == "pending"
        assert sent["data"]["request_id"].startswith("tutorial-")
        notification_id = sent["data"]["notification_id"]
        assert status["data"]["notification_id"] == notification_id  # step 4 asks about it
        assert status["data"]["user_id"] == demo_user["id"]  # step 2 found the demo user
        record = await system.wait_status(notification_id, "delivered")
        assert record["provider"] == "smtp"
        sent_ids.append(notification_id)
        mails = await wait_for_mails(system, demo_user["email"], run)
        assert [m.notification_id for m in mails] == sent_ids
        assert mails[-1].subject == "Welcome, Ada!"
    assert len(set(sent_ids)) == 2


async def test_the_same_request_id_again_is_a_replay_that_sends_nothing(
    system, demo_user, tmp_path
):
    token, user_id, send, _ = TUTORIAL
    request_line, _, send_only = send.partition("\n")
    assert request_line.startswith("REQUEST_ID=")
    before = len(mails_to(system, demo_user["email"]))
    first = await run_in_fresh_shell(
        "sh", for_this_system(system, "\n".join([token, user_id, send])), tmp_path
    )
    request_id = json.loads(first.splitlines()[0])["data"]["request_id"]
    # the README's replay: step 3's SENT=... command alone, with the same REQUEST_ID
    again = await run_in_fresh_shell(
        "sh",
        for_this_system(system, "\n".join([token, user_id, f"REQUEST_ID={request_id}", send_only])),
        tmp_path,
    )
    original, replay = json.loads(first.splitlines()[0]), json.loads(again.splitlines()[0])
    assert replay["data"]["notification_id"] == original["data"]["notification_id"]
    await system.wait_status(original["data"]["notification_id"], "delivered")
    await asyncio.sleep(1.0)  # time enough for a second mail, were one sent
    assert len(mails_to(system, demo_user["email"])) == before + 1


async def test_every_service_serves_its_api_docs_without_internet(system):
    for service in ("gateway", "user_service", "template_service", "dlq_service"):
        page = await system.http.get(f"{system.url(service)}/docs")
        assert page.status_code == 200, service
        assert external_references(page.text) == [], service
        for url in asset_urls(page.text):
            asset = await system.http.get(f"{system.url(service)}{url}")
            assert asset.status_code == 200, (service, url)


async def test_a_service_killed_with_sigkill_is_restarted_and_the_others_keep_running(system):
    reports: list[str] = []
    supervisor = Supervisor(Backoff(initial=0.5), report=reports.append)
    await asyncio.to_thread(supervise_services, supervisor, system.stack)
    others = {
        p.popen.pid: p for p in system.stack.processes if p.alive and p.name != "push_service"
    }
    [victim] = system.stack.find("push_service")
    victim.popen.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not any("push_service is ready again" in line for line in reports):
        assert time.monotonic() < deadline, reports
        await asyncio.to_thread(supervisor.poll)
        await asyncio.sleep(0.1)
    assert reports[0].startswith("push_service died (exit code -9, killed by SIGKILL); ")
    assert "restarting it in 0.5 s" in reports[0]
    assert "push_service-" in reports[0]  # names its log
    [replacement] = system.stack.find("push_service")
    assert replacement.popen.pid != victim.popen.pid
    assert all(process.alive for process in others.values())
    assert not any(
        line.startswith(("gateway", "email_service", "user_service")) for line in reports
    )
    response = await system.http.get(f"{replacement.url}/ready")
    assert response.status_code == 200
