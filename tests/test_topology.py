"""The production topology without containers: one PostgreSQL, one Dovecot, two gateway
processes sharing the queue, one webmail — each an ``mss run --role …`` process of its own on
one data directory, loopback only. Messages submitted across both gateways are each delivered
exactly once; the webmail answers over HTTPS."""

from __future__ import annotations

import email
import imaplib
import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.mailstore_fixtures import free_port, open_tempdir

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

MSS = [sys.executable, "-m", "mss.cli"]
PASSWORD = "Demo-Passw0rd"
SENDER, RECIPIENT = "marie.martin@mss.test", "paul.durand@mss.test"
MESSAGES = 24
DEADLINE = 90.0  # seconds for the whole scenario once the processes are up


class Topology:
    """The processes of the topology, each in its own process group (always killed)."""

    def __init__(self, data: Path, database_url: str) -> None:
        self.data = data
        self.ports: set[int] = set()  # handed out to the roles: no two alike
        self.base = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}
        self.base.update(MSS_DATA_DIR=str(data), MSS_DATABASE_URL=database_url,
                         MSS_DEMO_PASSWORD=PASSWORD, MSS_IMAP_PORT=self.port(),
                         MSS_IMAPS_PORT=self.port(), MSS_WEB_PORT=self.port(),
                         MSS_MANAGESIEVE_PORT=self.port(),
                         MSS_OIDC_STANDIN_PORT=self.port(),  # the demo's PSC stand-in
                         MSS_RATE_LIMIT_PER_MINUTE="0", MSS_RETRY_BASE_SECONDS="1",
                         # about the topology, not the credentials: the demo password on SMTP
                         MSS_IMAP_SMTP_WEB_PASSWORD="1")
        self.procs: list[subprocess.Popen[str]] = []
        self.submission: list[int] = []

    def port(self) -> str:
        """A free port not handed to another role yet (they bind only when started)."""
        port = free_port()
        while port in self.ports:
            port = free_port()
        self.ports.add(port)
        return str(port)

    def mss(self, *args: str) -> None:
        subprocess.run([*MSS, *args], env=self.base, check=True, capture_output=True,
                       timeout=120)

    def start(self, role: str, **env: str) -> None:
        # Its errors in a file of its own, quoted if it does not come up (CI: a webmail that
        # stopped at start, with nothing to say why).
        errors = self.data.parent / f"{role}-{len(self.procs)}.stderr"
        with errors.open("w") as sink:
            proc = subprocess.Popen([*MSS, "run", "--role", role], env={**self.base, **env},
                                    text=True, stdout=subprocess.PIPE, stderr=sink,
                                    start_new_session=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"mss run --role {role} s'est arrêté au démarrage :\n"
                                     + errors.read_text(errors="replace")[-3000:])
            if "Ctrl-C" in line:
                return
        raise AssertionError(f"mss run --role {role} pas prêt en 60 s :\n"
                             + errors.read_text(errors="replace")[-3000:])

    def start_gateway(self) -> None:
        ports = {name: self.port() for name in ("SUBMISSION", "SUBMISSIONS", "RELAY",
                                                "METRICS")}
        self.start("gateway", **{f"MSS_{n}_PORT": p for n, p in ports.items()})
        self.submission.append(int(ports["SUBMISSION"]))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def topology(pg_url: str) -> Iterator[Topology]:
    name = f"mss_topo_{os.getpid()}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    root = open_tempdir("mss-topology-")
    topo = Topology(root / "data", pg_url.rsplit("/", 1)[0] + "/" + name)
    try:
        topo.mss("demo")  # runs `mss init` (Alembic migrations on PostgreSQL) first
        # The store first, as in production; later `mss run` roles must not undo the data
        # directory's traverse bit that Dovecot's unprivileged processes need as root.
        topo.start("mailstore")
        topo.start_gateway()
        topo.start_gateway()
        topo.start("webmail")
        yield topo
    finally:
        topo.stop()
        shutil.rmtree(root, ignore_errors=True)
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _client_context(data: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(data / "pki" / "ca.pem"))
    context.check_hostname = False
    return context


def _submit(port: int, context: ssl.SSLContext, tokens: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login(SENDER, PASSWORD)
        for token in tokens:
            raw = (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: topologie\r\n"
                   f"Message-ID: <{token}@topology.test>\r\nX-MSS-Trace: {token}\r\n\r\n"
                   "Bonjour.\r\n").encode()
            smtp.sendmail(SENDER, [RECIPIENT], raw)


def _traces(topo: Topology, context: ssl.SSLContext) -> Counter[str]:
    imap = imaplib.IMAP4_SSL("127.0.0.1", int(topo.base["MSS_IMAPS_PORT"]),
                             ssl_context=context, timeout=10)
    try:
        imap.login(RECIPIENT, PASSWORD)
        found: Counter[str] = Counter()
        if imap.select("INBOX", readonly=True)[0] != "OK":  # created by the first delivery
            return found
        _, data = imap.search(None, "ALL")
        for num in data[0].split():
            _, parts = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (X-MSS-Trace)])")
            value = email.message_from_bytes(parts[0][1])["X-MSS-Trace"]  # type: ignore[index]
            if value:
                found[value.strip()] += 1
        return found
    finally:
        imap.logout()


def test_two_gateways_one_webmail_one_dovecot_on_postgresql(topology: Topology) -> None:
    started = time.monotonic()
    context = _client_context(topology.data)
    tokens = [uuid.uuid4().hex for _ in range(MESSAGES)]
    _submit(topology.submission[0], context, tokens[: MESSAGES // 2])
    _submit(topology.submission[1], context, tokens[MESSAGES // 2:])
    expected = set(tokens)
    while True:
        found = _traces(topology, context)
        if expected <= set(found) or time.monotonic() - started > DEADLINE:
            break
        time.sleep(0.5)
    assert set(found) >= expected, f"{len(expected - set(found))} message(s) non remis"
    assert all(found[t] == 1 for t in tokens), "message remis plusieurs fois"
    url = f"https://127.0.0.1:{topology.base['MSS_WEB_PORT']}/"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        page = response.read().decode()
    assert response.status == 200 and "<form" in page
    assert time.monotonic() - started < DEADLINE
