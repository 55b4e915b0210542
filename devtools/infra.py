"""Make sure RabbitMQ, Redis and PostgreSQL answer on localhost; start the ones that do not.

Used by ``make run`` and ``make test``. Starting uses the same commands the machines use, so a
developer machine where the services are installed but stopped works without manual steps.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

SERVICES: dict[str, tuple[str, list[str]]] = {
    "rabbitmq": ("RABBITMQ_URL", ["rabbitmq-server", "-detached"]),
    "redis": (
        "REDIS_URL",
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    ),
    "postgres": ("DATABASE_URL", []),  # command built at run time (needs the cluster version)
}
DEFAULTS = {
    "rabbitmq": ("127.0.0.1", 5672),
    "redis": ("127.0.0.1", 6379),
    "postgres": ("127.0.0.1", 5432),
}


def _address(name: str) -> tuple[str, int]:
    env, _ = SERVICES[name]
    url = os.environ.get(env) or os.environ.get(f"USER_{env}")
    if url:
        parsed = urlparse(url.replace("+asyncpg", ""))
        if parsed.hostname and parsed.port:
            return parsed.hostname, parsed.port
    return DEFAULTS[name]


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _start_command(name: str) -> list[str] | None:
    if name == "postgres":
        versions = sorted(glob.glob("/etc/postgresql/*"))
        if not versions or not shutil.which("pg_ctlcluster"):
            return None
        version = os.path.basename(versions[-1])
        return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
    command = SERVICES[name][1]
    return command if shutil.which(command[0]) else None


def ensure(names: tuple[str, ...] = ("rabbitmq", "redis", "postgres"), wait: float = 60) -> None:
    for name in names:
        host, port = _address(name)
        if reachable(host, port):
            continue
        local = host in ("127.0.0.1", "localhost", "::1")
        command = _start_command(name) if local else None
        if command is None:
            sys.exit(f"{name} is not reachable at {host}:{port} and cannot be started from here.")
        print(f"infra: {name} is not running; starting it: {' '.join(command)}", flush=True)
        subprocess.run(command, check=False)
        deadline = time.monotonic() + wait
        while not reachable(host, port):
            if time.monotonic() > deadline:
                sys.exit(f"{name} did not come up on {host}:{port} within {wait:.0f}s")
            time.sleep(0.5)
        if name == "rabbitmq":
            # the port opens before the broker accepts logins; wait for the app to be running
            subprocess.run(["rabbitmqctl", "await_startup"], check=False, capture_output=True)
        print(f"infra: {name} is up on {host}:{port}", flush=True)


if __name__ == "__main__":
    ensure()
    print("infra: rabbitmq, redis and postgres are reachable")
