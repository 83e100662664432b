"""The queue's doorbell: a message queued that no worker of the accepting process could take
rings the other gateway processes, whose idle workers then claim it at once instead of at their
next poll (up to ``Workers.poll``, 0.5 s; issue #19, submit → visible over IMAP).

A ring is a hint, never the only way a message is found: lost (a process restarting, a full
buffer, the database connection down), the poll still finds the message.

- PostgreSQL (one or several hosts): ``NOTIFY mss_queue`` on a connection of the bell's own,
  ``LISTEN mss_queue`` on another; PostgreSQL delivers it to every gateway of every host. The
  payload is the ringing process's name, so that a process does not answer its own ring.
- SQLite (one host): each gateway process binds a unix datagram socket in
  ``<data_dir>/run/bell/`` and a ring is one datagram to each of the others. A socket file
  that refuses (its process died without removing it) is removed by the next ring.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from core.db import Database

log = logging.getLogger("mss.gateway")

CHANNEL = "mss_queue"
RETRY_SECONDS = 5.0  # the PostgreSQL listener, after its connection failed
DRAIN = 1024  # rings read at most per nudge


class Doorbell(Protocol):
    """``listen(nudge)`` starts the thread that calls ``nudge`` when another process rings;
    ``ring`` after a transaction that queued a message committed; ``close`` at the stop."""

    def ring(self) -> None:
        """Tell the other processes; never raises (a ring is a hint)."""

    def listen(self, nudge: Callable[[], None]) -> None:
        """Start the thread that calls ``nudge`` for another process's rings."""

    def close(self) -> None:
        """Stop listening, remove what ``listen`` made."""


def doorbell_for(db: Database, run_dir: Path) -> Doorbell:
    if db.dialect == "postgresql":
        return PgDoorbell(db.url)
    return SocketDoorbell(run_dir / "bell")


class SocketDoorbell:
    """Unix datagram sockets, one per process, in ``directory`` (the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"{os.getpid()}-{secrets.token_hex(3)}.sock"
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)
        self._in: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ring(self) -> None:
        try:
            others = [e.path for e in os.scandir(self.directory)
                      if e.name.endswith(".sock") and e.path != str(self.path)]
        except OSError:
            return  # no bell yet: nobody listens
        for path in others:
            try:
                self._out.sendto(b"!", path)
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:  # its process is gone
                    Path(path).unlink(missing_ok=True)
                # EAGAIN: that process has rings waiting already; ENOENT: gone meanwhile

    def listen(self, nudge: Callable[[], None]) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            sock.bind(str(self.path))
        except OSError as exc:  # e.g. a data directory path too long for a unix socket
            sock.close()
            log.warning("sonnette de la file indisponible (%s) : relevé toutes les 0,5 s", exc)
            return
        sock.settimeout(0.5)
        self._in = sock
        self._thread = threading.Thread(target=self._run, args=(sock, nudge),
                                        name="queue-bell", daemon=True)
        self._thread.start()

    def _run(self, sock: socket.socket, nudge: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                sock.recv(16)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            _drain(sock)
            nudge()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self.path.unlink(missing_ok=True)
        for sock in (self._in, self._out):
            if sock is not None:
                sock.close()


def _drain(sock: socket.socket) -> None:
    """The rings that came meanwhile are one nudge: read them all (``BlockingIOError`` when
    none is left; at most ``DRAIN`` at a time, the next ones make the next nudge)."""
    with contextlib.suppress(OSError):
        for _ in range(DRAIN):
            sock.recv(16, socket.MSG_DONTWAIT)


class PgDoorbell:
    """``NOTIFY``/``LISTEN`` on connections of the bell's own (the module docstring)."""

    def __init__(self, url: str) -> None:
        self.conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._lock = threading.Lock()
        self._out: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ring(self) -> None:
        import psycopg

        with self._lock:
            if self._stop.is_set():
                return  # closed: no new connection that nobody would close
            try:
                if self._out is None or self._out.closed:
                    self._out = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
                self._out.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.name))
            except psycopg.Error as exc:
                log.debug("sonnette de la file : %s", exc)
                if self._out is not None:
                    self._out.close()
                self._out = None

    def listen(self, nudge: Callable[[], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(nudge,), name="queue-bell",
                                        daemon=True)
        self._thread.start()

    def _run(self, nudge: Callable[[], None]) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        if any(n.payload != self.name for n in conn.notifies(timeout=0.5)):
                            nudge()
            except psycopg.Error as exc:
                log.warning("sonnette de la file : %s ; nouvel essai dans %d s", exc,
                            RETRY_SECONDS)
                self._stop.wait(RETRY_SECONDS)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None
