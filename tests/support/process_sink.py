"""An SMTP sink in a process of its own, recording each mail as a JSON line.

Chaos tests use it so that the sink answers like a real relay would: its replies are not delayed by
the test process's own work (an in-process sink shares the test's GIL).
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


class ProcessSink:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or _free_port()
        self.record = workdir / "sink.jsonl"
        self.record.touch()
        self._popen: subprocess.Popen[bytes] | None = None
        self.handler = SimpleNamespace(counts=self.counts, snapshot=self.snapshot, mails=self)

    def start(self, mode: str = "accept", *extra: str) -> ProcessSink:
        """``extra``: more smtp_sink options, e.g. ``--delay-data 5``."""
        self._popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devtools.smtp_sink",
                "--port",
                str(self.port),
                "--record",
                str(self.record),
                "--mode",
                mode,
                "--quiet",
                *extra,
            ],
            cwd=ROOT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("the SMTP sink did not start")

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            self._popen.wait(10)
        self._popen = None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def snapshot(self) -> list[Any]:
        lines = self.record.read_text().splitlines()
        return [SimpleNamespace(**json.loads(line)) for line in lines if line.endswith("}")]

    def counts(self) -> Counter[str | None]:
        return Counter(m.notification_id for m in self.snapshot())

    def __len__(self) -> int:
        return len(self.snapshot())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
