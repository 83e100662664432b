"""A throwaway PostgreSQL server for the test session (Debian's postgresql package).

Started under a temporary directory on a loopback port; when the tests run as root the server
runs as the ``postgres`` system user (PostgreSQL refuses to run as root). ``MSS_TEST_PG_URL``
points the tests at an existing server instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _pg_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    from tests.ports import free_port

    return free_port()


class TempPostgres:
    """``listen``: the address it listens on; ``prefix``: a command the server is started
    under (``ip netns exec NAME``: a PostgreSQL host of its own, tests/test_topology_netns.py),
    its clients then allowed from ``listen``'s /24 (trust, like the loopback)."""

    def __init__(self, listen: str = "127.0.0.1", prefix: tuple[str, ...] = ()) -> None:
        bindir = _pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="mss-pg-"))
        self.datadir = self.root / "data"
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        self.listen, self.prefix = listen, prefix

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run([*self.prefix, *cmd], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def start(self) -> str:
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "mss",
                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        if self.listen != "127.0.0.1":
            network = self.listen.rsplit(".", 1)[0] + ".0/24"
            with open(self.datadir / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {network} trust\n")
        opts = (f"-c listen_addresses={self.listen} -c port={self.port} "
                f"-c unix_socket_directories={self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", opts,
                  "-l", str(self.root / "log"), "-w", "start")
        deadline = time.monotonic() + (0 if self.prefix else 30)  # pg_ctl -w waited
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                time.sleep(0.1)
        return f"postgresql+psycopg://mss@{self.listen}:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate",
                      "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
