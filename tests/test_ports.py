"""tests/ports.py: the ports test servers listen on are never in the kernel's ephemeral
range, where any outgoing connection may take them as its source port first."""

from __future__ import annotations

import socket

from tests.ports import FLOOR, _ephemeral_start, free_port


def test_ports_come_from_below_the_ephemeral_range_and_are_free() -> None:
    start = _ephemeral_start()
    ports = {free_port() for _ in range(50)}
    assert len(ports) > 40  # at random, not one port again and again
    for port in ports:
        assert FLOOR <= port < start
    port = ports.pop()
    with socket.socket() as server:  # free: a server binds and listens on it
        server.bind(("127.0.0.1", port))
        server.listen()
        # a port in use is never handed out
        assert port not in {free_port() for _ in range(200)}
