"""Operators for the gateway tests: the mail-store trust space (``tests.mailstore_fixtures``)
plus what the gateway needs — an operator certificate (CN = domain), an S/MIME certificate and
encrypted key for every local mailbox, the webmail's service account — a real Dovecot, and a
real ``GatewayService`` on ephemeral ports. Test modules load the fixtures with
``pytest_plugins = ["tests.gateway_fixtures"]``.
"""

from __future__ import annotations

import asyncio
import imaplib
import shutil
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import select

from core.settings import Settings
from gateway.service import GatewayService
from mailstore.service import DovecotService
from mss.app import App
from mss.setup import ensure_webmail_account, write_pair
from tests.mailstore_fixtures import (
    PASSWORD,
    TEST_OPTIONS,
    TrustSpace,
    build,
    make_settings,
    open_tempdir,
)
from trust_space.models import Mailbox

GATEWAY_DEFAULTS: dict[str, object] = {
    "submission_port": 0, "submissions_port": 0, "relay_port": 0, "metrics_port": 0,
    "hostname": "localhost", "retry_base_seconds": 1, "rate_limit_per_minute": 10_000,
    "queue_workers": 2, "security_policy": "sign", "max_message_size": 200_000,
}


def build_operator(root: Path, domain: str, organisation: str, **overrides: object) -> TrustSpace:
    """A data directory for ``domain`` ready for the gateway (see the module docstring)."""
    data = root / "data"
    data.mkdir(parents=True)
    (data / "mss.toml").write_text(f'domain = "{domain}"\noperator_name = "{organisation}"\n')
    values = {**GATEWAY_DEFAULTS, **overrides}
    space = build(make_settings(data, domain=domain, operator_name=organisation, **values))
    secret = space.settings.secret()
    with space.db.transaction() as session:
        operator = space.pki.issue_operator(session, [domain, "localhost"], organisation)
        write_pair(operator, space.settings.pki_dir / "operator.crt",
                   space.settings.pki_dir / "operator.key")
        for box in session.scalars(select(Mailbox).where(Mailbox.operator_id.is_(None))):
            issued = space.pki.issue_mailbox(session, box.address, box.display_name)
            box.smime_cert_pem = issued.cert_pem().decode()
            box.smime_key_pem = issued.key_pem(secret).decode()
        ensure_webmail_account(App(space.settings), session)
    return space


@dataclass
class Operator:
    """A running operator: its trust space, Dovecot and gateway."""

    space: TrustSpace
    dovecot: DovecotService
    gateway: GatewayService

    @property
    def settings(self) -> Settings:
        return self.space.settings

    def port(self, name: str) -> int:
        return self.gateway.ports[name]

    def client_context(self, card: str | None = None) -> ssl.SSLContext:
        context = self.space.tls_context(card)
        context.check_hostname = False
        return context

    def submit(self, sender: str, recipients: list[str], message: bytes, *,
               login: str | None = None, password: str = PASSWORD) -> str:
        """PLAIN over STARTTLS; the queue id from the 250 reply."""
        with smtplib.SMTP("127.0.0.1", self.port("submission"), timeout=30) as smtp:
            smtp.starttls(context=self.client_context())
            smtp.login(login or sender, password)
            smtp.mail(sender)
            for rcpt in recipients:
                code, text = smtp.rcpt(rcpt)
                assert code == 250, text
            code, text = smtp.data(message)
            assert code == 250, text
        return text.decode().rsplit(" ", 1)[-1]

    def imap(self, address: str) -> imaplib.IMAP4_SSL:
        conn = self.space.imaps()
        conn.login(address, PASSWORD)
        return conn

    def messages(self, address: str, folder: str = "INBOX") -> list[bytes]:
        """Every message of a folder, raw."""
        conn = self.imap(address)
        try:
            typ, _ = conn.select(folder, readonly=True)
            if typ != "OK":
                return []
            _, data = conn.search(None, "ALL")
            found = []
            for num in data[0].split():
                _, parts = conn.fetch(num, "(RFC822)")
                found.append(parts[0][1])  # type: ignore[index]
            return found
        finally:
            try:
                conn.logout()
            except (imaplib.IMAP4.abort, OSError):
                conn.shutdown()  # the server hung up: close the socket all the same

    def wait_for(self, address: str, predicate: Callable[[bytes], bool],
                 folder: str = "INBOX", timeout: float = 20.0) -> bytes:
        """The first message of the folder that satisfies ``predicate`` (polls)."""
        deadline = time.monotonic() + timeout
        while True:
            for raw in self.messages(address, folder):
                if predicate(raw):
                    return raw
            if time.monotonic() > deadline:
                raise AssertionError(f"aucun message attendu dans {address}/{folder}")
            time.sleep(0.2)


def start_operator(space: TrustSpace) -> Operator:
    dovecot = DovecotService(space.settings, space.db, options=TEST_OPTIONS)
    dovecot.start()
    gateway = GatewayService(space.settings, space.db)
    try:
        gateway.start()
    except BaseException:
        dovecot.stop()
        raise
    return Operator(space, dovecot, gateway)


def stop_operator(op: Operator) -> None:
    op.gateway.stop()
    op.dovecot.stop()
    op.space.db.dispose()


@pytest.fixture(scope="module")
def operator() -> Iterator[Operator]:
    """One operator (mss.test), running, for a test module."""
    root = open_tempdir("mss-gw-")
    op = start_operator(build_operator(root, "mss.test", "Operateur Un"))
    yield op
    stop_operator(op)
    shutil.rmtree(root, ignore_errors=True)


async def quit_and_wait_closed(smtp: aiosmtplib.SMTP, timeout: float = 10.0) -> None:
    """QUIT, then wait for the connection's socket to be closed: over TLS the close waits for
    the TLS shutdown, and a loop ended before it leaves the socket to the garbage collector
    (a ResourceWarning in whichever later test it runs; CI met it under load)."""
    protocol = smtp.protocol
    await smtp.quit()
    deadline = asyncio.get_running_loop().time() + timeout
    # connection_lost, once the socket is closed, unsets the protocol's transport
    while protocol is not None and protocol.transport is not None:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("connexion SMTP non fermée après QUIT")
        await asyncio.sleep(0.01)
