"""Free loopback ports for the servers a test starts.

Not ``bind(("127.0.0.1", 0))``: the kernel hands those out of its ephemeral range
(``net.ipv4.ip_local_port_range``, 32768–60999 by default), the very range it takes the source
port of every outgoing connection from, so between the check and the server's own bind any
client connection of any test could take the port (CI: « address already in use » on a
gateway's submission port). These come from below that range, at random, checked free."""

from __future__ import annotations

import random
import socket
from pathlib import Path

FLOOR = 20000  # above the fixed ports of the services a Debian machine may run
_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_pick = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback TCP port nothing listens on, outside the ephemeral range when it can be."""
    top = _ephemeral_start() - 1
    if top - FLOOR >= 1000:
        for _ in range(100):
            port = _pick.randint(FLOOR, top)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:  # an unusual range setting: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
