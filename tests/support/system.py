"""The whole system as separate processes (the way ``make run`` starts it), for e2e and chaos tests.

Each system gets its own vhost, databases, Redis prefix and ports, an in-process SMTP sink and a
local FCM-compatible server the test can inspect and break (or either one as a process of its own,
recording what it received: ``sink_process``, ``fcm_process``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devtools.fcm_stub import FcmStubState, create_fcm_stub, service_account
from devtools.smtp_sink import SmtpSink
from devtools.stack import SERVICES, Stack, base_env
from tests.support.isolation import AMQP_BASE, VhostPool, temp_database, temp_redis_prefix
from tests.support.process_sink import ProcessFcm, ProcessSink
from tests.support.servers import free_port, live_server

ADMIN = {"email": "admin@herald.local", "password": "admin12345!"}


@dataclass
class System:
    stack: Stack
    sink: Any  # SmtpSink, or ProcessSink with the same reading interface
    fcm: Any  # FcmStubState, or ProcessFcm with delivered_to (read-only)
    env: dict[str, str]
    http: httpx.AsyncClient
    _tokens: dict[str, str] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return self.stack.url(service)

    async def login(self, email: str, password: str) -> str:
        response = await self.http.post(
            f"{self.url('user_service')}/api/v1/auth/login",
            json={"email": email, "password": password},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["access_token"])

    async def admin(self) -> dict[str, str]:
        if "admin" not in self._tokens:
            self._tokens["admin"] = await self.login(ADMIN["email"], ADMIN["password"])
        return {"Authorization": f"Bearer {self._tokens['admin']}"}

    async def register_user(
        self,
        *,
        email: bool = True,
        push: bool = True,
        push_token: str | None = None,
        name: str = "Ada Lovelace",
        language: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": name,
            "email": f"user-{uuid.uuid4().hex[:10]}@example.com",
            "password": "correct-horse-42",
            "preferences": {"email": email, "push": push},
        }
        if push_token:
            body["push_token"] = push_token
        if language:
            body["language"] = language
        response = await self.http.post(
            f"{self.url('user_service')}/api/v1/users/", json=body, headers=await self.admin()
        )
        assert response.status_code == 201, response.text
        return dict(response.json()["data"]) | {"password": body["password"]}

    async def create_template(self, **body: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.url('template_service')}/api/v1/templates/",
            json=body,
            headers=await self.admin(),
        )
        assert response.status_code == 201, response.text
        return dict(response.json()["data"])

    async def send(self, headers: Mapping[str, str] | None = None, **body: Any) -> httpx.Response:
        payload = {"request_id": f"req-{uuid.uuid4().hex}", "variables": {}} | body
        return await self.http.post(
            f"{self.url('gateway')}/api/v1/notifications/",
            json=payload,
            headers=dict(headers) if headers is not None else await self.admin(),
        )

    async def status(self, ident: str) -> dict[str, Any]:
        response = await self.http.get(
            f"{self.url('gateway')}/api/v1/notifications/{ident}", headers=await self.admin()
        )
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    async def wait_status(
        self, ident: str, wanted: str | set[str], timeout: float = 20.0
    ) -> dict[str, Any]:
        wanted_set = {wanted} if isinstance(wanted, str) else wanted
        deadline = time.monotonic() + timeout
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            record = await self.status(ident)
            if record["status"] in wanted_set:
                return record
            await asyncio.sleep(0.1)
        raise AssertionError(f"{ident} still {record.get('status')} after {timeout}s: {record}")

    def logs(self, service: str) -> str:
        return "\n".join(
            p.log_path.read_text(errors="replace")
            for p in self.stack.processes
            if p.name == service and p.log_path is not None and p.log_path.exists()
        )


@asynccontextmanager
async def running_system(
    pool: VhostPool,
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    start: bool = True,
    sink_process: bool = False,
    fcm_process: bool = False,
) -> AsyncIterator[System]:
    """``sink_process``, ``fcm_process``: run the SMTP sink, the FCM stand-in as a separate
    process (as a real relay or provider would be)."""
    vhost = await asyncio.to_thread(pool.take)
    try:
        async with AsyncExitStack() as stack:
            users_db = await stack.enter_async_context(temp_database("users"))
            templates_db = await stack.enter_async_context(temp_database("templates"))
            dlq_db = await stack.enter_async_context(temp_database("dlq"))
            history_db = await stack.enter_async_context(temp_database("history"))
            prefix = await stack.enter_async_context(temp_redis_prefix("e2e"))
            sink: Any = ProcessSink(workdir).start() if sink_process else SmtpSink().start()
            stack.callback(sink.stop)
            fcm: Any
            if fcm_process:
                fcm = ProcessFcm(workdir).start()
                stack.callback(fcm.stop)
                fcm_url, account = fcm.url, fcm.account
            else:
                fcm = FcmStubState()
                fcm_url = await stack.enter_async_context(live_server(create_fcm_stub(fcm)))
                account = workdir / "fcm-service-account.json"
                account.write_text(json.dumps(service_account(f"{fcm_url}/token", "herald-test")))
            environment = (
                base_env()
                | {
                    "ENVIRONMENT": "test",
                    "LOG_FORMAT": "json",
                    "LOG_LEVEL": "INFO",
                    "RABBITMQ_URL": f"{AMQP_BASE}/{vhost}",
                    "REDIS_URL": "redis://127.0.0.1:6379/0",
                    "REDIS_KEY_PREFIX": prefix,
                    "USER_DATABASE_URL": users_db,
                    "TEMPLATE_DATABASE_URL": templates_db,
                    "DLQ_DATABASE_URL": dlq_db,
                    "GATEWAY_DATABASE_URL": history_db,
                    "SMTP_HOST": sink.host,
                    "SMTP_PORT": str(sink.port),
                    "EMAIL_PROVIDERS": '["smtp"]',
                    "FCM_BASE_URL": fcm_url,
                    "FCM_CREDENTIALS_FILE": str(account),
                    "EMAIL_RETRY_DELAYS_MS": "[300, 600, 1200]",
                    "PUSH_RETRY_DELAYS_MS": "[300, 600, 1200]",
                    "CLAIM_WAIT_MS": "500",
                    "SHUTDOWN_GRACE_SECONDS": "10",
                }
                | dict(env or {})
            )
            ports = {spec.name: free_port() for spec in SERVICES}
            system_stack = Stack(environment, ports=ports, log_dir=workdir / "logs")
            # stop off the event loop: services finishing in-flight work still talk to the
            # in-process FCM server and sink, which this loop serves
            stack.push_async_callback(asyncio.to_thread, system_stack.stop_all)
            await asyncio.to_thread(system_stack.prepare)
            if start:
                await asyncio.to_thread(system_stack.start_all, 90)
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=15))
            yield System(system_stack, sink, fcm, environment, http)
    finally:
        pool.give_back(vhost)
