"""``make run``: the whole system as local processes, until Ctrl-C.

1. make sure RabbitMQ, Redis and PostgreSQL answer (start them if they are installed but stopped);
2. create and migrate the databases, seed the admin, the service account and demo templates;
3. start a local SMTP sink and a local FCM-compatible server unless real ones are configured;
4. start the six services and wait until each is ready;
5. register a demo user with a demo device, and print how to send a first notification;
6. on Ctrl-C (or SIGTERM), stop every process gracefully.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

from devtools import infra
from devtools.stack import ROOT, Stack, base_env

RUN_DIR = ROOT / ".run"


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


def _start_helper(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    print(f"run: starting {name}: {' '.join(args)}", flush=True)
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env)


def _demo_user(stack: Stack, settings: LauncherSettings) -> dict[str, Any]:
    """Register (or find) the demo user and give it a demo device."""
    users = stack.url("user_service")
    with httpx.Client(base_url=users, timeout=10) as client:
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
            )
            created.raise_for_status()
            user = created.json()["data"]
    return user


def _banner(stack: Stack, settings: LauncherSettings, user: dict[str, Any], sink: bool) -> str:
    gateway, users = stack.url("gateway"), stack.url("user_service")
    token_cmd = (
        f"TOKEN=$(curl -s {users}/api/v1/auth/login -H 'content-type: application/json' "
        f'-d \'{{"email":"{settings.admin_email}","password":"{settings.admin_password}"}}\' '
        '| python3 -c \'import json,sys; print(json.load(sys.stdin)["data"]["access_token"])\')'
    )
    body = json.dumps(
        {
            "notification_type": "email",
            "user_id": user["id"],
            "template_code": "welcome",
            "variables": {"name": "Ada", "link": "https://example.com/start"},
            "request_id": "first-notification-1",
        }
    )
    send_cmd = (
        f'curl -s {gateway}/api/v1/notifications/ -H "authorization: Bearer $TOKEN" '
        f"-H 'content-type: application/json' -d '{body}'"
    )
    where = "the SMTP sink's lines below (and .run/mail/)" if sink else "your SMTP relay"
    return "\n".join(
        [
            "",
            "=" * 78,
            "Herald is running. Services:",
            *(
                f"  {name:<17} {stack.url(name)}  (docs: {stack.url(name)}/docs)"
                for name in stack.ports
            ),
            "",
            f"Demo user: {user['email']}  id={user['id']}",
            "Send a first notification:",
            f"  {token_cmd}",
            f"  {send_cmd}",
            f"Then look at {where}, and at the status:",
            f"  curl -s {gateway}/api/v1/notifications/first-notification-1 "
            '-H "authorization: Bearer $TOKEN"',
            "Dead-letter console API: " + stack.url("dlq_service") + "/docs",
            "Ctrl-C stops everything.",
            "=" * 78,
            "",
        ]
    )


def main() -> None:
    settings = LauncherSettings()
    infra.ensure()
    env = base_env()
    env.setdefault("LOG_FORMAT", "console")
    RUN_DIR.mkdir(exist_ok=True)
    helpers: list[subprocess.Popen[bytes]] = []
    sink = not settings.smtp_host
    if sink:
        env["SMTP_HOST"], env["SMTP_PORT"] = "127.0.0.1", str(settings.smtp_port)
        helpers.append(
            _start_helper(
                "SMTP sink",
                [
                    "devtools.smtp_sink",
                    "--port",
                    str(settings.smtp_port),
                    "--maildir",
                    str(RUN_DIR / "mail"),
                ],
                env,
            )
        )
    if not (settings.fcm_credentials_file or settings.fcm_credentials_json):
        account = RUN_DIR / "fcm-service-account.json"
        env["FCM_CREDENTIALS_FILE"] = str(account)
        env["FCM_BASE_URL"] = f"http://127.0.0.1:{settings.fcm_stub_port}"
        helpers.append(
            _start_helper(
                "FCM stand-in",
                [
                    "devtools.fcm_stub",
                    "--port",
                    str(settings.fcm_stub_port),
                    "--write-service-account",
                    str(account),
                ],
                env,
            )
        )
    stack = Stack(env)
    stopping = threading.Event()

    def request_stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    try:
        print("run: preparing databases (migrate, seed)...", flush=True)
        stack.prepare()
        for spec_name in stack.ports:
            if stopping.is_set():
                break
            print(f"run: starting {spec_name} on {stack.url(spec_name)}", flush=True)
            stack.wait_ready(stack.start(spec_name))
        if not stopping.is_set():
            print(_banner(stack, settings, _demo_user(stack, settings), sink), flush=True)
        while not stopping.wait(1.0):
            dead = [p for p in stack.processes if not p.alive]
            if dead:
                print(
                    f"run: {dead[0].name} exited ({dead[0].popen.returncode}); stopping", flush=True
                )
                code = 1
                break
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        print(f"run: start-up failed: {exc}", flush=True)
        code = 1
    finally:
        print("run: stopping services...", flush=True)
        stack.stop_all()
        for helper in helpers:
            helper.send_signal(signal.SIGTERM)
        for helper in helpers:
            try:
                helper.wait(10)
            except subprocess.TimeoutExpired:
                helper.kill()
        print("run: stopped.", flush=True)
    sys.exit(code)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
