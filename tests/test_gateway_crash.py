"""Durability: the gateway killed with SIGKILL at random moments during a burst loses nothing it
acknowledged and delivers nothing twice; two gateway processes sharing one PostgreSQL queue
deliver exactly N messages for N submitted."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiosmtplib
import pytest
from sqlalchemy import create_engine, text

from spool import queue as q
from tests.ports import free_port

if TYPE_CHECKING:
    from tests.gateway_fixtures import Operator

pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures"]
PASSWORD = "Demo-Passw0rd"
MARIE, PAUL, JULIE = "marie.martin@mss.test", "paul.durand@mss.test", "julie.bernard@mss.test"
ROOT = Path(__file__).resolve().parent.parent
RETRIES: list[str] = []
BURST, KILLS, PG_BURST = 300, 4, 150  # bounded for CI (about 25 s and 15 s here)
_MID = re.compile(rb"(?im)^message-id:\s*(<[^>]+>)")


class Gateway:
    """A gateway in a child process (``tests.gateway_runner``), with fixed ports."""

    def __init__(self, data_dir: Path, **overrides: object) -> None:
        self.args = [sys.executable, "-m", "tests.gateway_runner", str(data_dir),
                     *(f"{k}={v}" for k, v in overrides.items())]
        self.log = Path(data_dir) / "gateway-runner.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, int]:
        with open(self.log, "ab") as log:  # the runner's log, kept for a failure's post-mortem
            self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "la passerelle n'a pas démarré"
        return dict(json.loads(line))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()




def burst_message(mid: str) -> bytes:
    return (f"From: {MARIE}\r\nTo: {PAUL}, {JULIE}\r\nSubject: rafale\r\n"
            f"Message-ID: {mid}\r\n\r\nCourt.\r\n").encode()


async def burst(port: int, op: Operator, count: int, sessions: int,
                ports: list[int] | None = None, acked: set[str] | None = None) -> set[str]:
    """Send ``count`` messages over ``sessions`` connections, each message again until it gets
    a 250 (same Message-ID: a client retrying after a lost reply); the acknowledged ids (also
    added to ``acked`` as they come, for a watcher in another thread)."""
    todo = [f"<{uuid.uuid4().hex}@mss.test>" for _ in range(count)]
    acked = set() if acked is None else acked
    context = op.client_context()

    from tests.gateway_fixtures import quit_and_wait_closed

    async def session(index: int) -> None:
        smtp: aiosmtplib.SMTP | None = None
        target = (ports or [port])[index % len(ports or [port])]
        while todo:
            mid = todo.pop()
            while True:
                try:
                    if smtp is None:
                        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=target, timeout=10,
                                               start_tls=True, tls_context=context)
                        await smtp.connect()
                        await smtp.login(MARIE, PASSWORD)
                    await smtp.sendmail(MARIE, [PAUL, JULIE], burst_message(mid))
                    acked.add(mid)
                    break
                except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                    RETRIES.append(repr(exc)[:200])
                    if smtp is not None:
                        smtp.close()
                    smtp = None
                    await asyncio.sleep(0.2)
        if smtp is not None:
            await quit_and_wait_closed(smtp)

    await asyncio.gather(*(session(i) for i in range(sessions)))
    return acked


def message_ids(op: Operator, address: str, folder: str = "INBOX") -> Counter[str]:
    conn = op.imap(address)
    try:
        conn.select(folder, readonly=True)
        typ, data = conn.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        found: Counter[str] = Counter()
        for part in data if typ == "OK" else []:
            if isinstance(part, tuple):
                match = _MID.search(part[1])
                if match:
                    found[match.group(1).decode()] += 1
        return found
    finally:
        conn.logout()


def wait_empty(op: Operator, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with op.space.db.transaction() as session:
            if q.depth(session) == 0:
                return
        assert time.monotonic() < deadline, "la file ne se vide pas"
        time.sleep(0.3)


def assert_exactly_once(op: Operator, acked: set[str]) -> None:
    for address, folder in ((PAUL, "INBOX"), (JULIE, "INBOX"), (MARIE, "Sent")):
        seen = message_ids(op, address, folder)
        burst_ids = {m: n for m, n in seen.items() if m in acked or n > 1}
        assert not [m for m in acked if seen[m] == 0], f"perdus dans {address}/{folder}"
        assert not {m: n for m, n in burst_ids.items() if n > 1}, f"doublons {address}"


@pytest.fixture(scope="module")
def idle_operator() -> Iterator[Operator]:
    """An operator with Dovecot running but no gateway in this process."""
    from mailstore.service import DovecotService
    from tests.gateway_fixtures import Operator as Op
    from tests.gateway_fixtures import build_operator
    from tests.mailstore_fixtures import TEST_OPTIONS, open_tempdir

    root = open_tempdir("mss-crash-")
    space = build_operator(root, "mss.test", "Operateur Un")
    dovecot = DovecotService(space.settings, space.db, options=TEST_OPTIONS)
    dovecot.start()
    yield Op(space, dovecot, None)  # type: ignore[arg-type]
    dovecot.stop()
    space.db.dispose()
    shutil.rmtree(root, ignore_errors=True)


def runner_settings(op: Operator, **extra: object) -> dict[str, object]:
    return {"submission_port": free_port(), "submissions_port": 0, "relay_port": 0,
            "metrics_port": 0, "hostname": "localhost", "security_policy": "none",
            # Short enough to recover quickly after each kill, long enough that a loaded
            # machine never sees a live worker's batch taken over (leases are 120 s by default).
            "rate_limit_per_minute": 0, "queue_lease_seconds": 10, "retry_base_seconds": 1,
            "queue_workers": 4, "imap_port": op.settings.imap_port,
            "imaps_port": op.settings.imaps_port,
            "imap_smtp_web_password": True,  # these tests submit with the demo password
            **extra}


# A connection cut by SIGKILL in the middle of STARTTLS leaves aiosmtplib's raw transport to
# the garbage collector: a ResourceWarning of the client library, not of the gateway.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill_9_during_a_burst_loses_nothing_and_duplicates_nothing(
        idle_operator: Operator) -> None:
    op = idle_operator
    settings = runner_settings(op)
    gateway = Gateway(op.settings.data_dir, **settings)
    gateway.start()
    done = threading.Event()
    kills = 0
    progress: set[str] = set()

    def killer() -> None:
        """SIGKILL at a random point of each fifth of the burst: tied to the messages acknowledged
        so far, not to the clock, so that a fast machine cannot finish the burst first."""
        nonlocal kills
        rng = random.Random()
        step = BURST // (KILLS + 1)
        for index in range(1, KILLS + 1):
            mark = index * step + rng.randrange(step // 2)
            while len(progress) < mark:
                if done.wait(0.01):
                    return
            gateway.kill()
            kills += 1
            gateway.start()

    thread = threading.Thread(target=killer)
    thread.start()
    port = int(settings["submission_port"])  # type: ignore[call-overload]
    try:
        try:
            acked = asyncio.run(asyncio.wait_for(
                burst(port, op, BURST, 8, acked=progress), 90))
        finally:
            done.set()
            thread.join()
        wait_empty(op, 60)
    finally:
        gateway.stop()
    assert kills == KILLS and len(acked) == BURST
    try:
        assert_exactly_once(op, acked)
    except AssertionError:  # the post-mortem: what the gateway and Dovecot said of it
        print(gateway.log.read_text(errors="replace")[-20000:])
        for log in (op.settings.data_dir / "log").glob("*.log"):
            print("\n".join(line for line in log.read_text(errors="replace").splitlines()
                            if "Panic" in line or "Fatal" in line or "Error" in line))
        raise


@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_two_gateways_on_one_postgresql_queue_deliver_n_for_n(pg_url: str) -> None:
    from mailstore.service import DovecotService
    from tests.gateway_fixtures import Operator as Op
    from tests.gateway_fixtures import build_operator
    from tests.mailstore_fixtures import TEST_OPTIONS, open_tempdir

    name = f"mss_gw_{os.getpid()}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    root = open_tempdir("mss-pg-gw-")
    space = build_operator(root, "mss.test", "Operateur Un", database_url=url)
    dovecot = DovecotService(space.settings, space.db, options=TEST_OPTIONS)
    dovecot.start()
    op = Op(space, dovecot, None)  # type: ignore[arg-type]
    gateways = [Gateway(space.settings.data_dir, **runner_settings(op, database_url=url))
                for _ in range(2)]
    try:
        ports = [g.start()["submission"] for g in gateways]
        acked = asyncio.run(asyncio.wait_for(burst(ports[0], op, PG_BURST, 6, ports=ports), 90))
        wait_empty(op, 40)
        assert len(acked) == PG_BURST
        assert_exactly_once(op, acked)
        for address in (PAUL, JULIE):
            assert sum(message_ids(op, address).values()) == PG_BURST
    finally:
        for g in gateways:
            g.stop()
        dovecot.stop()
        space.db.dispose()
        shutil.rmtree(root, ignore_errors=True)
