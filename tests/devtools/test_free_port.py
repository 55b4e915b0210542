"""Ports the tests hand to servers that bind later (tests/support/servers.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.servers import RESERVED_PORTS, free_port

pytestmark = pytest.mark.unit


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < low for port in ports)
    assert not RESERVED_PORTS & set(ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_never_handed_out() -> None:
    """500 listeners spread over the range: 300 random picks would hit one (all but certainly)
    if the port were not tried first."""
    taken = []
    try:
        for port in range(20000, 32000, 24):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use already: it counts just as well
                sock.close()
                continue
            sock.listen()
            taken.append(sock)
        listening = set(range(20000, 32000, 24))
        assert not listening & {free_port() for _ in range(300)}
    finally:
        for sock in taken:
            sock.close()
