"""The system under test: every service a separate process (``tests/support/system.py``), the SMTP
sink and the FCM stand-in in processes of their own, a template per channel, users with a device.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from benchmarks.ceilings import MinimalServer
from benchmarks.config import BenchConfig, Progress
from benchmarks.procstat import Group, ProcStat, by_command, by_pids
from benchmarks.wrk import Load
from devtools.stack import SERVICES
from tests.support.isolation import REDIS_URL, VhostPool
from tests.support.system import ADMIN, System, running_system

TEMPLATES = {
    "email": {
        "code": "bench_email",
        "name": "Bench email",
        "type": "email",
        "subject": "Hello {{ name }}",
        "content": '<h1>Hello {{ name }}</h1><p><a href="{{ link }}">Open</a></p>',
    },
    "push": {
        "code": "bench_push",
        "name": "Bench push",
        "type": "push",
        "title": "Hi {{ name }}",
        "content": "Open {{ link }}",
        "link": "{{ link }}",
    },
}
# The gateway's per-caller rate limit would measure itself: lifted (the check still runs).
ENVIRONMENT = {"RATE_LIMIT_PER_SECOND": "1000000000", "RATE_LIMIT_BURST": "1000000000"}
CONSUMERS = ("email_service", "push_service")


@dataclass
class Bench:
    config: BenchConfig
    system: System
    say: Progress
    workdir: Path
    broker: AbstractRobustConnection
    users: list[str] = field(default_factory=list)
    minimal: MinimalServer | None = None
    stat: ProcStat = field(init=False)

    def __post_init__(self) -> None:
        services = [by_pids(s.name, self._pids(s.name), ours=True) for s in SERVICES]
        self.stat = ProcStat(
            [
                *services,
                by_pids("smtp sink", lambda: [self.system.sink.pid]),
                by_pids("fcm stand-in", lambda: [self.system.fcm.pid]),
                by_pids("minimal endpoint", lambda: [self.minimal.pid if self.minimal else None]),
                by_command("redis", "redis-server"),
                by_command("rabbitmq", "beam.smp"),
                by_command("postgresql", "postgres"),
                Group("bench (this process)", lambda _s: [os.getpid()], with_children=False),
            ]
        )

    def _pids(self, service: str) -> Callable[[], list[int]]:
        return lambda: [process.popen.pid for process in self.system.stack.find(service)]

    def pids(self, service: str) -> list[int]:
        """The running processes of ``service`` (more than one with several workers)."""
        return self._pids(service)()

    @property
    def gateway(self) -> str:
        return self.system.url("gateway")

    @property
    def amqp_url(self) -> str:
        return self.system.env["RABBITMQ_URL"]

    @property
    def redis_url(self) -> str:
        return REDIS_URL

    @property
    def redis_prefix(self) -> str:
        return self.system.env["REDIS_KEY_PREFIX"]

    async def token(self) -> str:
        """A fresh admin token (tokens expire after 15 minutes)."""
        return await self.system.login(ADMIN["email"], ADMIN["password"])

    async def load(self, kind: str, connections: int, **options: object) -> Load:
        """A wrk load with a fresh admin token."""
        return Load(
            kind=kind,
            template=TEMPLATES[kind]["code"],
            users=self.users,
            token=await self.token(),
            connections=connections,
            threads=self.config.wrk_threads,
            **options,  # type: ignore[arg-type]
        )

    async def purge(self, *queues: str) -> None:
        """Empty work queues of this run's vhost (what the gateway published with consumers
        stopped), so the next measurement starts from the same broker state."""
        for name in queues:
            channel = await self.broker.channel()
            with suppress(aio_pika.exceptions.ChannelClosed):
                queue = await channel.declare_queue(name, passive=True)
                await queue.purge()
            with suppress(Exception):
                await channel.close()

    async def purge_until_quiet(self, *queues: str, timeout: float = 60.0) -> None:
        """Purge until nothing more arrives: requests wrk left in flight (a batch of 1,000 takes
        seconds) are still published after it stops, and would otherwise be the first thing the
        consumers deliver in the next phase, ahead of what it measures."""
        deadline = asyncio.get_running_loop().time() + timeout
        quiet = 0
        while quiet < 2 and asyncio.get_running_loop().time() < deadline:
            await self.purge(*queues)
            await asyncio.sleep(0.5)
            quiet = quiet + 1 if await self.depth(*queues) == 0 else 0

    async def depth(self, *queues: str) -> int:
        total = 0
        for name in queues:
            channel = await self.broker.channel()
            with suppress(aio_pika.exceptions.ChannelClosed):
                queue = await channel.declare_queue(name, passive=True)
                total += queue.declaration_result.message_count or 0
            with suppress(Exception):
                await channel.close()
        return total

    async def stop_consumers(self) -> None:
        for name in CONSUMERS:
            for process in self.system.stack.find(name):
                await asyncio.to_thread(self.system.stack.stop, process)

    async def start_consumers(self) -> None:
        stack = self.system.stack
        started = [stack.start(name) for name in CONSUMERS if not stack.find(name)]
        await asyncio.to_thread(stack.wait_all_ready, started, 90)

    async def restart_gateway(self, extra_env: dict[str, str]) -> int:
        """The gateway again, with ``extra_env``; returns how many processes it runs."""
        stack = self.system.stack
        for process in stack.find("gateway"):
            await asyncio.to_thread(stack.stop, process)
        process = stack.start("gateway", extra_env=extra_env)
        await asyncio.to_thread(stack.wait_ready, process, 90)
        await asyncio.sleep(1)  # workers past the first may answer /ready a little later
        return self.stat.processes()["gateway"]


@asynccontextmanager
async def open_bench(
    config: BenchConfig, pool: VhostPool, workdir: Path, say: Progress
) -> AsyncIterator[Bench]:
    say("starting the system: every service, the SMTP sink and the FCM stand-in a process")
    async with running_system(
        pool, workdir, env=ENVIRONMENT, sink_process=True, fcm_process=True
    ) as system:
        for template in TEMPLATES.values():
            await system.create_template(**template)
        users = await asyncio.gather(
            *(
                system.register_user(push_token=f"bench-device-{uuid.uuid4().hex}")
                for _ in range(config.users)
            )
        )
        broker = await aio_pika.connect_robust(system.env["RABBITMQ_URL"])
        bench = Bench(config, system, say, workdir, broker, [str(u["id"]) for u in users])
        try:
            say(f"system ready: {len(users)} users, templates {', '.join(TEMPLATES)}")
            yield bench
        finally:
            if bench.minimal is not None:
                bench.minimal.stop()
            await broker.close()
