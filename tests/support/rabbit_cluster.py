"""A RabbitMQ cluster of its own for a test: three nodes beside the shared broker (untouched).

Each node is the machine's RabbitMQ (``/usr/lib/rabbitmq/bin/rabbitmq-server``) run as a separate
Erlang node with its own node name, AMQP and distribution ports, data and log directories, an
empty plugin list (no management plugin) and an Erlang cookie of its own (through ``HOME``), so
neither the shared broker's configuration (``/etc/rabbitmq``) nor its cookie is read. The nodes
register with the machine's epmd, which the shared broker started; nothing else is shared.

Start-up measured here: the three nodes boot in parallel in about 8 s, the two joins
(``stop_app``, ``reset``, ``join_cluster``, ``start_app``) take about 5 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def available() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").exists()


@dataclass
class Node:
    name: str
    port: int
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.base / "home"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }


class RabbitCluster:
    def __init__(self, workdir: Path, size: int = 3, cookie: str | None = None) -> None:
        run = uuid.uuid4().hex[:6]
        self.workdir = workdir
        self.cookie = cookie or uuid.uuid4().hex.upper()
        self.nodes = [
            Node(f"herald-{run}-{i}@localhost", free_port(), free_port(), workdir / f"node{i}")
            for i in range(1, size + 1)
        ]
        self.stopped: set[str] = set()

    def urls(self, vhost: str = "") -> str:
        """RABBITMQ_URL for clients that know every node (comma-separated, node 1 first)."""
        return ",".join(f"{node.url}{vhost}" for node in self.nodes)

    def ctl(self, node: Node, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", node.name, *args],
            env=node.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {node.name}: {result.stdout}{result.stderr}"
            )
        return result.stdout

    def start(self) -> dict[str, float]:
        """Boot every node, join them into one cluster; returns how long each step took."""
        started = time.monotonic()
        for node in self.nodes:
            self._boot(node)
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self._await_startup, self.nodes))
        booted = time.monotonic()
        first, *others = self.nodes
        for node in others:
            self.ctl(node, "stop_app")
            self.ctl(node, "reset")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        running = set(
            json.loads(self.ctl(first, "cluster_status", "--formatter", "json"))["running_nodes"]
        )
        if running != {node.name for node in self.nodes}:
            raise RuntimeError(f"cluster did not form: running {sorted(running)}")
        return {
            "boot_seconds": round(booted - started, 2),
            "join_seconds": round(time.monotonic() - booted, 2),
        }

    def _boot(self, node: Node) -> None:
        for sub in ("home", "mnesia", "log"):
            (node.base / sub).mkdir(parents=True, exist_ok=True)
        cookie = node.base / "home" / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        (node.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{node.port}\nloopback_users = none\n"
        )
        (node.base / "advanced.config").write_text("[].\n")
        (node.base / "rabbitmq-env.conf").write_text("")
        (node.base / "enabled_plugins").write_text("[].\n")
        log = (node.base / "server.out").open("ab")
        node.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=node.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended by its id at teardown
        )
        log.close()

    def _await_startup(self, node: Node, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert node.process is not None
            if node.process.poll() is not None:
                raise RuntimeError(f"{node.name} exited: {self._tail(node)}")
            try:
                self.ctl(node, "await_startup", "--timeout", "30", timeout=40)
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _tail(self, node: Node) -> str:
        out = node.base / "server.out"
        return out.read_text(errors="replace")[-2000:] if out.exists() else ""

    def running(self) -> list[Node]:
        return [node for node in self.nodes if node.name not in self.stopped]

    def queue_leader(self, queue: str, vhost: str = "/") -> Node:
        """The node that leads a quorum queue now."""
        out = self.ctl(
            self.running()[0], "list_queues", "-p", vhost, "name", "leader", "--formatter", "json"
        )
        leaders = {row["name"]: row["leader"] for row in json.loads(out)}
        return next(node for node in self.nodes if node.name == leaders[queue])

    def stop_node(self, node: Node) -> None:
        """Stop one node the way an operator (or a rolling restart) does: ``rabbitmqctl stop``."""
        self.stopped.add(node.name)
        self.ctl(node, "stop", timeout=120)
        if node.process is not None:
            node.process.wait(30)

    def close(self) -> None:
        """Stop every node still running (SIGKILL to its own process group if it will not go),
        then remove the nodes' directories."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                self.ctl(node, "stop", timeout=60)
                node.process.wait(30)
            except (RuntimeError, subprocess.TimeoutExpired):
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)
