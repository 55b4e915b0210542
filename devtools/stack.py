"""Start the six services as separate processes, the way ``make run`` does (and the e2e tests).

``Stack`` prepares the databases (create, migrate, seed), starts each service with its own port,
waits until it is ready, and can stop (SIGTERM), kill (SIGKILL) or restart any process, including
extra replicas of a consumer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port_env: str
    port: int
    migrate: bool = False
    seed: bool = False

    @property
    def setup_commands(self) -> tuple[str, ...]:
        """``python -m <service> <command>`` steps to run before the service starts."""
        return (("migrate",) if self.migrate else ()) + (("seed",) if self.seed else ())


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("user_service", "USER_SERVICE_PORT", 8001, migrate=True, seed=True),
    ServiceSpec("template_service", "TEMPLATE_SERVICE_PORT", 8002, migrate=True, seed=True),
    ServiceSpec("dlq_service", "DLQ_SERVICE_PORT", 8005, migrate=True),
    ServiceSpec("gateway", "GATEWAY_PORT", 8000, migrate=True),
    ServiceSpec("email_service", "EMAIL_SERVICE_PORT", 8003),
    ServiceSpec("push_service", "PUSH_SERVICE_PORT", 8004),
)
SPECS = {spec.name: spec for spec in SERVICES}


@dataclass
class Process:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


def _pump(stream: IO[bytes], prefix: str) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{prefix} | {line.decode('utf-8', 'replace')}")
        sys.stdout.flush()


class Stack:
    def __init__(
        self,
        env: Mapping[str, str],
        *,
        ports: Mapping[str, int] | None = None,
        log_dir: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        """``env`` is the environment of every process; ``log_dir`` None streams to stdout."""
        self.env = dict(env)
        self.ports = {spec.name: spec.port for spec in SERVICES} | dict(ports or {})
        self.log_dir = log_dir
        self.python = python
        self.processes: list[Process] = []
        for spec in SERVICES:
            self.env[spec.port_env] = str(self.ports[spec.name])
        self.env["USER_SERVICE_URL"] = f"http://127.0.0.1:{self.ports['user_service']}"
        self.env["TEMPLATE_SERVICE_URL"] = f"http://127.0.0.1:{self.ports['template_service']}"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def prepare(self) -> None:
        """Create and migrate each service's database; seed the admin and demo templates.

        Every step runs in one interpreter (``devtools/prepare.py`` says why); with a ``log_dir``
        its output is kept in ``prepare.log`` there.
        """
        steps = [f"{spec.name}:{command}" for spec in SERVICES for command in spec.setup_commands]
        result = subprocess.run(
            [self.python, "-m", "devtools.prepare", *steps],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with (self.log_dir / "prepare.log").open("a") as log:
                log.write(result.stdout + result.stderr)
        if result.returncode != 0:
            failed = (result.stderr.strip().splitlines() or ["preparing the databases failed"])[-1]
            raise RuntimeError(f"{failed}\n{result.stdout}\n{result.stderr}")

    def start(
        self, name: str, *, port: int | None = None, extra_env: Mapping[str, str] | None = None
    ) -> Process:
        spec = SPECS[name]
        port = port or self.ports[name]
        env = {**self.env, spec.port_env: str(port), **(extra_env or {})}
        label = f"{name}:{port}"
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}-{port}.log"
            out = log_path.open("ab")
            popen = subprocess.Popen(
                [self.python, "-m", name], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            out.close()
            process = Process(name, port, popen, log_path)
        else:
            popen = subprocess.Popen(
                [self.python, "-m", name],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            process = Process(name, port, popen)
            assert popen.stdout is not None
            pump = threading.Thread(target=_pump, args=(popen.stdout, label.ljust(21)), daemon=True)
            pump.start()
            process.threads.append(pump)
        self.processes.append(process)
        return process

    def wait_ready(self, process: Process, timeout: float = 60.0) -> None:
        self.wait_all_ready([process], timeout)

    def wait_all_ready(
        self,
        processes: Sequence[Process],
        timeout: float = 60.0,
        *,
        on_ready: Callable[[Process], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Poll every process's ``/ready`` together until each answers 200.

        ``on_ready`` is called once per process, as it becomes ready. Raises RuntimeError when
        one exits and TimeoutError after ``timeout``; returns early once ``stop`` is set.
        """
        deadline = time.monotonic() + timeout
        pending = list(processes)
        last: dict[int, str] = {}
        with httpx.Client(timeout=2) as client:
            while pending:
                if stop is not None and stop.is_set():
                    return
                for process in list(pending):
                    if not process.alive:
                        raise RuntimeError(
                            f"{process.name} exited with {process.popen.returncode}"
                            f"{self._tail(process)}"
                        )
                    try:
                        response = client.get(f"{process.url}/ready")
                        if response.status_code == 200:
                            pending.remove(process)
                            if on_ready is not None:
                                on_ready(process)
                            continue
                        last[process.port] = response.text[:300]
                    except httpx.HTTPError as exc:
                        last[process.port] = repr(exc)
                if not pending:
                    return
                if time.monotonic() > deadline:
                    late = pending[0]
                    raise TimeoutError(
                        f"{late.name} not ready after {timeout}s: {last.get(late.port, '')}"
                        f"{self._tail(late)}"
                    )
                if stop is None:
                    time.sleep(0.2)
                elif stop.wait(0.2):
                    return

    def _tail(self, process: Process, lines: int = 40) -> str:
        if process.log_path is None or not process.log_path.exists():
            return ""
        text = process.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- last log lines ---\n" + "\n".join(text)

    def start_all(self, timeout: float = 60.0) -> list[Process]:
        """Start every service at once (none needs another to start), then wait for each."""
        processes = [self.start(spec.name) for spec in SERVICES]
        self.wait_all_ready(processes, timeout)
        return processes

    def prepare_and_start_all(
        self,
        timeout: float = 60.0,
        *,
        on_ready: Callable[[Process], None] | None = None,
        stop: threading.Event | None = None,
    ) -> list[Process]:
        """``prepare`` and ``start_all`` overlapped, the way ``make run`` starts.

        The services that own no database start first and import while the databases are
        prepared; the others start once their database is ready. Returns early (with what it
        started) once ``stop`` is set.
        """
        processes = [self.start(spec.name) for spec in SERVICES if not spec.setup_commands]
        self.prepare()
        if stop is not None and stop.is_set():
            return processes
        processes += [self.start(spec.name) for spec in SERVICES if spec.setup_commands]
        self.wait_all_ready(processes, timeout, on_ready=on_ready, stop=stop)
        return processes

    def stop(self, process: Process, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``. True if it exited on its own (gracefully).

        uvicorn finishes its graceful shutdown and then re-raises the SIGTERM it caught, so a
        graceful exit status is -SIGTERM (or 0), never -SIGKILL.
        """
        if process.alive:
            process.popen.send_signal(signal.SIGTERM)
            try:
                process.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(5)
        return process.popen.returncode in (0, -signal.SIGTERM)

    def kill(self, process: Process) -> None:
        process.popen.kill()
        process.popen.wait(10)

    def stop_all(self, timeout: float = 20.0) -> None:
        running = [p for p in self.processes if p.alive]
        for process in reversed(running):
            process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(5)
        for process in self.processes:
            for thread in process.threads:
                thread.join(timeout=2)

    def find(self, name: str) -> list[Process]:
        return [p for p in self.processes if p.name == name and p.alive]


def base_env() -> dict[str, str]:
    """The launcher's own environment, with Python told not to buffer child output."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
