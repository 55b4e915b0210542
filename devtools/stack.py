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
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
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


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("user_service", "USER_SERVICE_PORT", 8001, migrate=True, seed=True),
    ServiceSpec("template_service", "TEMPLATE_SERVICE_PORT", 8002, migrate=True, seed=True),
    ServiceSpec("dlq_service", "DLQ_SERVICE_PORT", 8005, migrate=True),
    ServiceSpec("gateway", "GATEWAY_PORT", 8000),
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

        Services own separate databases, so they are prepared in parallel.
        """
        with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
            for future in [pool.submit(self._prepare, spec) for spec in SERVICES]:
                future.result()

    def _prepare(self, spec: ServiceSpec) -> None:
        steps = (["migrate"] if spec.migrate else []) + (["seed"] if spec.seed else [])
        for step in steps:
            result = subprocess.run(
                [self.python, "-m", spec.name, step],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode != 0:
                raise RuntimeError(f"{spec.name} {step} failed:\n{result.stdout}\n{result.stderr}")

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
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not process.alive:
                raise RuntimeError(
                    f"{process.name} exited with {process.popen.returncode}{self._tail(process)}"
                )
            try:
                response = httpx.get(f"{process.url}/ready", timeout=2)
                if response.status_code == 200:
                    return
                last = response.text[:300]
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise TimeoutError(
            f"{process.name} not ready after {timeout}s: {last}{self._tail(process)}"
        )

    def _tail(self, process: Process, lines: int = 40) -> str:
        if process.log_path is None or not process.log_path.exists():
            return ""
        text = process.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- last log lines ---\n" + "\n".join(text)

    def start_all(self, timeout: float = 60.0) -> None:
        """Start every service at once (none needs another to start), then wait for each."""
        for process in [self.start(spec.name) for spec in SERVICES]:
            self.wait_ready(process, timeout)

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
