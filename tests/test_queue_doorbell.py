"""The queue's doorbell (spool/doorbell.py): a ring reaches every other gateway process, never
the ringer; a dead process's socket goes; a bell that cannot be set up leaves the poll alone.
Real unix sockets, a real PostgreSQL for NOTIFY/LISTEN. The delivery it speeds up is tested
with a real gateway in test_gateway_leases.py."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from spool.doorbell import PgDoorbell, SocketDoorbell
from tests.webmail_mail_helpers import wait_until


class Heard:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


def test_a_ring_reaches_every_other_process_and_not_the_ringer(tmp_path: Path) -> None:
    bells = [SocketDoorbell(tmp_path / "bell") for _ in range(3)]
    heard = [Heard() for _ in bells]
    for bell, ear in zip(bells, heard, strict=True):
        bell.listen(ear)
    try:
        bells[0].ring()
        assert heard[1].event.wait(5) and heard[2].event.wait(5)
        time.sleep(0.3)
        assert heard[0].count == 0
        # Many rings while a process is busy are one nudge or a few, never a backlog of them.
        for _ in range(200):
            bells[1].ring()
        wait_until(lambda: heard[0].count >= 1, 10)
        time.sleep(0.3)
        assert heard[0].count < 50
    finally:
        for bell in bells:
            bell.close()
    assert list((tmp_path / "bell").iterdir()) == []  # each removes its socket


def test_a_dead_processes_socket_is_removed_by_the_next_ring(tmp_path: Path) -> None:
    directory = tmp_path / "bell"
    directory.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "4242-abcdef.sock"))
    dead.close()  # killed -9: the file stays, nobody reads it
    alive, ringer = SocketDoorbell(directory), SocketDoorbell(directory)
    ear = Heard()
    alive.listen(ear)
    try:
        ringer.ring()
        assert ear.event.wait(5)
        assert not (directory / "4242-abcdef.sock").exists()
    finally:
        alive.close()
        ringer.close()


def test_no_bell_leaves_the_poll_and_says_so(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A data directory whose path is too long for a unix socket (108 bytes): a warning, the
    workers poll as before, and a ring with nobody listening is no error."""
    deep = tmp_path / ("d" * 120)
    bell = SocketDoorbell(deep)
    with caplog.at_level("WARNING", logger="mss.gateway"):
        bell.listen(Heard())
    assert "sonnette de la file indisponible" in caplog.text
    bell.ring()
    bell.close()
    alone = SocketDoorbell(tmp_path / "never-made")
    alone.ring()
    alone.close()


def test_postgresql_rings_through_notify(pg_url: str) -> None:
    bells = [PgDoorbell(pg_url) for _ in range(2)]
    heard = [Heard() for _ in bells]
    for bell, ear in zip(bells, heard, strict=True):
        bell.listen(ear)
    try:
        # LISTEN is issued by each bell's thread: ring until the other has heard.
        wait_until(lambda: (bells[0].ring(), heard[1].event.is_set())[1], 10)
        time.sleep(0.5)
        assert heard[0].count == 0  # its own ring comes back through LISTEN, ignored
        bells[1].ring()
        assert heard[0].event.wait(5)
    finally:
        for bell in bells:
            bell.close()
    bells[0].ring()  # an acceptance finishing after the stop: no connection left open
    assert bells[0]._out is None
