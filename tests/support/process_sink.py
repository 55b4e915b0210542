"""Stand-ins in processes of their own, each recording what it received as JSON lines.

Chaos tests and the benchmark use them so that a stand-in answers like a real relay or provider
would: its replies are not delayed by the test process's own work (an in-process server shares the
test's GIL), and its CPU can be measured apart.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from devtools.stack import ROOT
from tests.support.servers import free_port


class ChildServer:
    """A ``python -m <module>`` server on a local port, recording to ``record`` (JSON lines)."""

    name = "server"

    def __init__(self, record: Path, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.record = record
        self.record.touch()
        self._popen: subprocess.Popen[bytes] | None = None

    def _spawn(self, module: str, *args: str) -> None:
        self._popen = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"the {self.name} did not start")

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            self._popen.wait(10)
        self._popen = None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self.running and self._popen is not None else None

    def snapshot(self) -> list[Any]:
        lines = self.record.read_text().splitlines()
        return [SimpleNamespace(**json.loads(line)) for line in lines if line.endswith("}")]

    def counts(self) -> Counter[str | None]:
        return Counter(m.notification_id for m in self.snapshot())

    def __len__(self) -> int:
        return len(self.snapshot())


class ProcessSink(ChildServer):
    """The SMTP sink (``devtools.smtp_sink``), one line per mail."""

    name = "SMTP sink"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir / "sink.jsonl", port)
        self.handler = SimpleNamespace(counts=self.counts, snapshot=self.snapshot, mails=self)

    def start(self, mode: str = "accept", *extra: str) -> ProcessSink:
        """``extra``: more smtp_sink options, e.g. ``--delay-data 5``."""
        self._spawn(
            "devtools.smtp_sink",
            *("--port", str(self.port), "--record", str(self.record), "--mode", mode, "--quiet"),
            *extra,
        )
        return self


class ProcessFcm(ChildServer):
    """The FCM stand-in (``devtools.fcm_stub``), one line per accepted message, and the service
    account whose ``token_uri`` points at it."""

    name = "FCM stand-in"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir / "fcm.jsonl", port)
        self.account = workdir / "fcm-service-account.json"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ProcessFcm:
        self._spawn(
            "devtools.fcm_stub",
            *("--port", str(self.port), "--record", str(self.record)),
            *("--write-service-account", str(self.account)),
        )
        return self

    def delivered_to(self, token: str) -> list[Any]:
        return [m for m in self.snapshot() if m.token == token]
