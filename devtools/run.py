"""``make run``: the whole system as local processes, until Ctrl-C.

1. make sure RabbitMQ, Redis and PostgreSQL answer (start them if they are installed but stopped);
2. start a local SMTP sink and a local FCM-compatible server unless real ones are configured;
3. start the six services at once, the three that own a database once it is migrated and seeded
   (``Stack.prepare_and_start_all``), and wait until each is ready;
4. register a demo user with a demo device, then print how to send a first notification, last,
   and write the same to ``.run/instructions.txt``;
5. restart any process that dies, with backoff (``devtools/supervisor.py``), saying so;
6. on Ctrl-C (or SIGTERM, SIGHUP), stop every process gracefully.

The services log to ``.run/logs/<service>-<port>.log``; the console shows one line per service
as it becomes ready, the instructions, the sink's received mails and the supervisor's reports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from devtools import infra
from devtools.stack import ROOT, Process, Stack, base_env
from devtools.supervisor import Supervisor
from devtools.tutorial import as_script, first_notification_steps

RUN_DIR = ROOT / ".run"
LOG_DIR = RUN_DIR / "logs"
MAIL_DIR = RUN_DIR / "mail"
INSTRUCTIONS = RUN_DIR / "instructions.txt"
PASTE_FROM = f"{' paste from here ':-^100}"
PASTE_TO = f"{' to here ':-^100}"


class LauncherSettings(BaseSettings):
    """The few settings the launcher itself needs (the services read the rest)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    smtp_host: str | None = None
    smtp_port: int = 1025
    fcm_credentials_file: str | None = None
    fcm_credentials_json: str | None = None
    fcm_stub_port: int = 8099
    admin_email: str = "admin@herald.local"
    admin_password: str = "admin12345!"
    demo_user_email: str = "demo@example.com"  # EmailStr refuses special-use domains (.local)
    demo_user_password: str = "demo-password-1"
    # As a single-host deployment runs it: a gateway worker per core (at most 2 here, beside
    # everything else on the machine); GATEWAY_WORKERS in the environment or .env wins.
    gateway_workers: int = Field(default_factory=lambda: min(2, os.cpu_count() or 1), ge=1)


def say(message: str) -> None:
    print(f"run: {message}", flush=True)


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (shorter to read and to paste)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@dataclass(frozen=True)
class Helper:
    """A stand-in for something outside the system (SMTP relay, FCM), run as a process."""

    name: str
    module_args: list[str]
    port: int
    shows: str

    def start(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", *self.module_args], cwd=ROOT, env=env)

    def wait_listening(self, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not infra.reachable("127.0.0.1", self.port, timeout=0.2):
            if process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not listening on port {self.port}")
            time.sleep(0.1)


def helpers_for(settings: LauncherSettings, env: dict[str, str]) -> list[Helper]:
    """The stand-ins to run, pointing ``env`` (the services' environment) at them."""
    helpers = []
    if not settings.smtp_host:
        env["SMTP_HOST"], env["SMTP_PORT"] = "127.0.0.1", str(settings.smtp_port)
        helpers.append(
            Helper(
                "smtp-sink",
                [
                    "devtools.smtp_sink",
                    "--port",
                    str(settings.smtp_port),
                    "--maildir",
                    str(MAIL_DIR),
                ],
                settings.smtp_port,
                f"127.0.0.1:{settings.smtp_port}, prints each mail below, keeps it in "
                f"{shown(MAIL_DIR)}/",
            )
        )
    if not (settings.fcm_credentials_file or settings.fcm_credentials_json):
        account = RUN_DIR / "fcm-service-account.json"
        fcm_url = f"http://127.0.0.1:{settings.fcm_stub_port}"
        env["FCM_CREDENTIALS_FILE"], env["FCM_BASE_URL"] = str(account), fcm_url
        helpers.append(
            Helper(
                "fcm-stub",
                [
                    "devtools.fcm_stub",
                    "--port",
                    str(settings.fcm_stub_port),
                    "--write-service-account",
                    str(account),
                ],
                settings.fcm_stub_port,
                f"{fcm_url} (FCM HTTP v1 stand-in)",
            )
        )
    return helpers


def register_demo_user(users_url: str, settings: LauncherSettings) -> dict[str, Any]:
    """Register (or find) the demo user, with a demo device; returns it."""
    with httpx.Client(base_url=users_url, timeout=10) as client:
        login = client.post(
            "/api/v1/auth/login",
            json={"email": settings.admin_email, "password": settings.admin_password},
        )
        login.raise_for_status()
        admin = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
        found = client.get(
            "/api/v1/users/", params={"email": settings.demo_user_email}, headers=admin
        )
        found.raise_for_status()
        matches = [u for u in found.json()["data"] if u["email"] == settings.demo_user_email]
        if matches:
            user: dict[str, Any] = matches[0]
        else:
            created = client.post(
                "/api/v1/users/",
                json={
                    "name": "Demo User",
                    "email": settings.demo_user_email,
                    "password": settings.demo_user_password,
                    "push_token": "demo-device-token",
                    "preferences": {"email": True, "push": True},
                },
                headers=admin,
            )
            created.raise_for_status()
            user = created.json()["data"]
    return user


def answers_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _restart(stack: Stack, process: Process) -> subprocess.Popen[bytes]:
    return stack.start(process.name, port=process.port).popen


def supervise_services(supervisor: Supervisor, stack: Stack) -> None:
    """Put each running service of ``stack`` under ``supervisor``, which restarts it in place."""
    for process in [p for p in stack.processes if p.alive]:
        supervisor.add(
            process.name,
            partial(_restart, stack, process),
            process=process.popen,
            ready=partial(answers_ready, process.url),
            log=shown(process.log_path) if process.log_path else None,
        )


def instructions(
    stack: Stack, settings: LauncherSettings, helpers: list[Helper], user: dict[str, Any]
) -> str:
    steps = first_notification_steps(
        gateway=stack.url("gateway"),
        users=stack.url("user_service"),
        admin_email=settings.admin_email,
        admin_password=settings.admin_password,
        demo_email=settings.demo_user_email,
    )
    logs = shown(LOG_DIR)
    mail = (
        "The mail appears below within a second (a line from smtp-sink, subject 'Welcome, Ada!')."
        if any(helper.name == "smtp-sink" for helper in helpers)
        else f"The mail goes to your SMTP relay ({settings.smtp_host})."
    )
    return "\n".join(
        [
            "Services (each serves its API docs at /docs, without internet):",
            *(
                f"  {name:<17} {stack.url(name)}   docs: {stack.url(name)}/docs"
                for name in sorted(stack.ports, key=stack.ports.__getitem__)
            ),
            *(f"  {helper.name:<17} {helper.shows}" for helper in helpers),
            f"Logs: {logs}/<service>-<port>.log and {logs}/prepare.log (tail -f {logs}/*)",
            f"Demo user: {user['email']} (id {user['id']})",
            f"Operator console (failed messages, replays): {stack.url('dlq_service')}/ "
            f"(log in as {settings.admin_email}); in a terminal: .venv/bin/herald-dlq --help",
            "",
            "Send a first notification: paste the commands between the two marks into a shell.",
            f"They are also in {shown(INSTRUCTIONS)}, and explained in README.md. They do:",
            *(f"  {number}. {step.says}" for number, step in enumerate(steps, 1)),
            PASTE_FROM,
            as_script(steps),
            PASTE_TO,
            mail,
            "Run the commands again for another one. Ctrl-C here stops everything.",
        ]
    )


def main() -> None:
    launched = time.monotonic()
    settings = LauncherSettings()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    say("checking RabbitMQ, Redis and PostgreSQL")
    infra.ensure()
    env = base_env()
    env.setdefault("LOG_FORMAT", "console")
    env["GATEWAY_WORKERS"] = str(settings.gateway_workers)
    RUN_DIR.mkdir(exist_ok=True)
    LOG_DIR.mkdir(exist_ok=True)
    for stale in [*LOG_DIR.glob("*.log"), INSTRUCTIONS]:  # this run's only
        stale.unlink(missing_ok=True)
    supervisor = Supervisor(report=say)
    helpers = helpers_for(settings, env)
    stack = Stack(env, log_dir=LOG_DIR)
    code = 0
    try:
        for helper in helpers:
            supervisor.add(helper.name, partial(helper.start, env))
        say(f"starting six services, logs in {shown(LOG_DIR)}/; migrating and seeding databases")

        def report_ready(process: Process) -> None:
            elapsed = time.monotonic() - launched
            say(f"  {process.name:<17} ready at {process.url}  ({elapsed:.1f} s)")

        stack.prepare_and_start_all(90, on_ready=report_ready, stop=stop)
        if not stop.is_set():
            for helper in helpers:
                helper.wait_listening(supervisor.process(helper.name))
            user = register_demo_user(stack.url("user_service"), settings)
            supervise_services(supervisor, stack)
            text = instructions(stack, settings, helpers, user)
            INSTRUCTIONS.write_text(text + "\n")
            ready_in = time.monotonic() - launched
            line = "=" * 100
            print(f"\n{line}\nHerald is ready ({ready_in:.1f} s).\n{text}\n{line}\n", flush=True)
        while not stop.wait(0.5):
            supervisor.poll()
    except (RuntimeError, TimeoutError, httpx.HTTPError, OSError) as exc:
        if not stop.is_set():  # after Ctrl-C, processes ending is no failure
            say(f"start-up failed: {exc}")
            say(f"the services' logs are in {shown(LOG_DIR)}/")
            code = 1
    finally:
        say("stopping...")
        stack.stop_all()  # services first: they may still hand in-flight mail to the sink
        supervisor.stop_all()
        say("stopped.")
    sys.exit(code)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
