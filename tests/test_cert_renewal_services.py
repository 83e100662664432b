"""After ``mss cert renew``, the running services present the new certificate without a
restart: the gateway's submission (STARTTLS), submissions (implicit TLS, with and without a
server name) and relay ports, the webmail's HTTPS and Dovecot's IMAPS — each checked by a real
TLS handshake with the standard library on loopback. A careless swap (a key that does not fit
the certificate) leaves the previous certificate in service instead of breaking TLS."""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from certs import _x509util as xu
from certs.pki import Pki
from core.db import Database
from core.settings import Settings
from gateway.service import GatewayService
from mailstore.service import DovecotService
from tests.mailstore_fixtures import TEST_OPTIONS, free_port, open_tempdir
from tests.test_cli import mss
from webmail.service import WebmailService


@dataclass
class Running:
    settings: Settings
    client: tuple[Path, Path]  # a client certificate of our CA, for the relay's mutual TLS

    @property
    def pki(self) -> Path:
        return self.settings.pki_dir

    def context(self, client: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        context.check_hostname = False
        if client:
            context.load_cert_chain(*map(str, self.client))
        return context

    def implicit(self, port: int, server_name: str | None = None) -> int:
        """The serial of the certificate a port with implicit TLS presents."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                self.context().wrap_socket(raw, server_hostname=server_name) as tls:
            return _serial(tls.getpeercert(binary_form=True))

    def starttls(self, port: int, client: bool = False) -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.starttls(context=self.context(client))
            assert isinstance(smtp.sock, ssl.SSLSocket)
            return _serial(smtp.sock.getpeercert(binary_form=True))


def _serial(der: bytes | None) -> int:
    assert der
    return x509.load_der_x509_certificate(der).serial_number


def on_disk(pki: Path, kind: str) -> int:
    return x509.load_pem_x509_certificate((pki / f"{kind}.crt").read_bytes()).serial_number


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[Running, GatewayService, WebmailService, DovecotService]]:
    root = open_tempdir("mss-renew-services-")
    data = root / "data"
    assert mss(data, "init", "--domain", "mss.test").returncode == 0
    ports = {name: free_port() for name in ("web_port", "submission_port", "submissions_port",
                                            "relay_port", "imap_port", "imaps_port")}
    settings = Settings.load(data_dir=data, environ={}, listen_address="127.0.0.1",
                             hostname="localhost", metrics_port=0, whitelist_url="",
                             managesieve_port=0, **ports)
    db = Database(settings.effective_database_url)
    pki = Pki.load(settings.pki_dir, password=settings.secret())
    with db.transaction() as session:
        issued = pki.issue_client(session, "Relais de test")
    client = (root / "client.crt", root / "client.key")
    client[0].write_bytes(issued.cert_pem())
    client[1].write_bytes(issued.key_pem())
    dovecot = DovecotService(settings, db, options=TEST_OPTIONS, watch_interval=0.2)
    gateway = GatewayService(settings, db, workers=0)
    webmail = WebmailService(settings, db)
    started: list[DovecotService | GatewayService | WebmailService] = []
    try:
        for service in (dovecot, gateway, webmail):
            service.start()
            started.append(service)
        yield Running(settings, client), gateway, webmail, dovecot
    finally:
        for service in reversed(started):
            service.stop()
        db.dispose()
        shutil.rmtree(root, ignore_errors=True)


def eventually(read: Callable[[], int], expected: int, timeout: float = 15.0) -> int:
    """``read()`` until it gives ``expected`` (Dovecot reloads within its watch interval)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = read()
        except (OSError, ssl.SSLError):
            value = -1
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def presented(run: Running, gateway: GatewayService, web_port: int,
              imaps_port: int) -> dict[str, Callable[[], int]]:
    ports = gateway.ports
    return {
        "submission": lambda: run.starttls(ports["submission"]),
        "submissions": lambda: run.implicit(ports["submissions"]),
        "submissions-sni": lambda: run.implicit(ports["submissions"], "localhost"),
        "webmail": lambda: run.implicit(web_port),
        "imaps": lambda: run.implicit(imaps_port),
        "relay": lambda: run.starttls(ports["relay"], client=True),
    }


def test_services_present_the_renewed_certificates(running) -> None:  # type: ignore[no-untyped-def]
    run, gateway, webmail, dovecot = running
    pki = run.pki
    reads = presented(run, gateway, webmail.port, run.settings.imaps_port)
    server, operator = on_disk(pki, "server"), on_disk(pki, "operator")
    expected = {name: operator if name == "relay" else server for name in reads}
    assert {name: read() for name, read in reads.items()} == expected
    pid = dovecot.pid

    for kind in ("server", "operator"):
        result = mss(run.settings.data_dir, "cert", "renew", kind)
        assert result.returncode == 0, result.stderr
    server, operator = on_disk(pki, "server"), on_disk(pki, "operator")
    assert server not in expected.values() and operator not in expected.values()
    expected = {name: operator if name == "relay" else server for name in reads}
    assert {name: eventually(read, expected[name]) for name, read in reads.items()} == expected
    assert dovecot.pid == pid and dovecot.restarts == 0  # reloaded, not restarted


def test_a_key_that_does_not_fit_keeps_the_previous_certificate(running) -> None:  # type: ignore[no-untyped-def]
    """The operator writes a wrong key by hand: the gateway and the webmail keep presenting
    the certificate in service (and say so in their log) until a proper renewal."""
    run, gateway, webmail, dovecot = running
    pki = run.pki
    reads = presented(run, gateway, webmail.port, run.settings.imaps_port)
    del reads["imaps"]  # Dovecot re-reads both files on SIGHUP: checked after the renewal
    serial = on_disk(pki, "server")
    assert reads["submission"]() == serial
    wrong = xu.key_pem(rsa.generate_private_key(65537, 2048), None)
    xu.atomic_write(pki / "server.key", wrong, 0o600)
    xu.atomic_write(pki / "operator.key", wrong, 0o600)
    operator = on_disk(pki, "operator")
    for name, read in reads.items():
        assert read() == (operator if name == "relay" else serial), name
    result = mss(run.settings.data_dir, "cert", "renew", "server")
    assert result.returncode == 0, result.stderr
    renewed = on_disk(pki, "server")
    assert eventually(reads["submissions"], renewed) == renewed
    assert eventually(reads["webmail"], renewed) == renewed
    imaps = lambda: run.implicit(run.settings.imaps_port)  # noqa: E731
    assert eventually(imaps, renewed) == renewed
    assert dovecot.wait_ready(10)
