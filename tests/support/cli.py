"""Run ``python -m dlq_service <command>`` (the operator's command line) as a separate process."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping


async def herald_dlq(
    env: Mapping[str, str], *args: str, timeout: float = 120
) -> tuple[int, str, str]:
    """Exit status, stdout and stderr; ``env`` adds to this process's environment (HERALD_...).

    Tables are laid out 200 columns wide, and standard input is not a terminal (so the command
    never waits for an answer: without ``--yes`` it refuses).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dlq_service",
        *args,
        env={**os.environ, "COLUMNS": "200", **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
