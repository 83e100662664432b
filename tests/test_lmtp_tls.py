"""LMTP over TLS between hosts (issue #19, ``MSS_LMTP_URL=lmtps://host:port``): a real Dovecot
behind the mail store's TLS front (``mailstore.lmtps``), the gateway's real LMTP client
(``mailstore.lmtp``), and the clients an attacker would use: a raw TLS client without a
certificate, a professional's card, a certificate of another authority, a revoked gateway
certificate. Also the settings' and ``mss init``'s side: URL forms, the client certificate
written, the server certificate naming the hosts other machines reach."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from certs.pki import Pki
from core.errors import ConfigError
from core.settings import Settings
from mailstore import config
from mailstore.lmtp import LmtpClient
from mailstore.lmtps import LMTP_CLIENT_NAME, is_gateway_certificate
from mailstore.service import DovecotService
from mss.setup import write_pair
from tests.mailstore_fixtures import TEST_OPTIONS, TrustSpace, free_port, publish_crl

pytest_plugins = ["tests.mailstore_fixtures"]
pytestmark = pytest.mark.timeout(120)

SENDER = "marie.martin@mss.test"


@dataclass
class Store:
    """A second Dovecot on the shared trust space, reached only through lmtps."""

    settings: Settings
    service: DovecotService
    port: int

    def raw_tls(self, context: ssl.SSLContext) -> bytes:
        """What a raw TLS client receives first (b"" when the store hangs up)."""
        with socket.create_connection(("127.0.0.1", self.port), 5) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.settimeout(5)
            return tls.recv(200)


@pytest.fixture(scope="module")
def store(mailstore_space: TrustSpace) -> Iterator[Store]:
    port = free_port()
    settings = mailstore_space.sibling_settings(lmtp_url=f"lmtps://localhost:{port}")
    with mailstore_space.db.transaction() as session:
        cert, key = settings.lmtp_client_pair
        write_pair(mailstore_space.pki.issue_client(session, f"{LMTP_CLIENT_NAME} gw1"),
                   cert, key)
    service = DovecotService(settings, mailstore_space.db, options=TEST_OPTIONS)
    service.start()
    try:
        yield Store(settings, service, port)
    finally:
        service.stop()
        shutil.rmtree(settings.data_dir.parent, ignore_errors=True)


def _message(token: str) -> bytes:
    return (f"From: {SENDER}\r\nTo: paul.durand@mss.test\r\nSubject: lmtps\r\n"
            f"Message-ID: <{token}@lmtps.test>\r\n\r\nBonjour.\r\n").encode()


def _inbox_count(space: TrustSpace, settings: Settings, token: str) -> int:
    """Messages carrying ``token`` in Paul's INBOX of ``settings``' store, over IMAPS."""
    import imaplib
    with imaplib.IMAP4_SSL("127.0.0.1", settings.imaps_port, ssl_context=space.tls_context(),
                           timeout=10) as imap:
        imap.login("paul.durand@mss.test", space.password)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "HEADER", "Message-ID", f"<{token}@lmtps.test>")
        return len(data[0].split())


def test_gateway_delivers_over_tls_with_its_certificate(store: Store,
                                                        mailstore_space: TrustSpace) -> None:
    client = LmtpClient.for_settings(store.settings, timeout=10)
    assert client.tls is not None and client.target == "localhost"
    token = f"ok{time.monotonic_ns()}"
    results = client.deliver(_message(token), SENDER, ["paul.durand@mss.test"])
    assert results["paul.durand@mss.test"].delivered, results
    assert _inbox_count(mailstore_space, store.settings, token) == 1


def test_raw_tls_client_without_certificate_is_refused(store: Store,
                                                       mailstore_space: TrustSpace) -> None:
    front = store.service.lmtps
    assert front is not None
    before = front.refused
    context = ssl.create_default_context(cafile=str(mailstore_space.ca_file))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        greeting = store.raw_tls(context)
        # TLS 1.3: the handshake ends on the client's side before the server's alert
        # arrives; then the first read gets the alert (certificate required), never 220
        assert not greeting.startswith(b"220"), greeting
        raise ConnectionError("refusé sans accueil")
    deadline = time.monotonic() + 5  # counted by the store's thread after its alert
    while front.refused == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert front.refused == before + 1


def test_card_and_practice_software_certificates_are_refused(
        store: Store, mailstore_space: TrustSpace) -> None:
    """Certificates of the same CA that are not a gateway's: a professional's card, an
    applicative mailbox's client certificate. TLS succeeds, then the store hangs up."""
    for who in ("marie", "lps"):
        assert store.raw_tls(mailstore_space.tls_context(who)) == b""


def test_certificate_of_another_authority_is_refused(store: Store, tmp_path: Path,
                                                     mailstore_space: TrustSpace) -> None:
    from core.db import Database

    other = Pki.create(tmp_path / "pki", "Autre", "autre.test")
    db = Database(f"sqlite:///{tmp_path / 'other.db'}")
    db.create_all()
    with db.transaction() as session:
        write_pair(other.issue_client(session, LMTP_CLIENT_NAME), tmp_path / "c.crt",
                   tmp_path / "c.key")
    db.dispose()
    context = mailstore_space.tls_context()
    context.load_cert_chain(str(tmp_path / "c.crt"), str(tmp_path / "c.key"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        assert not store.raw_tls(context).startswith(b"220")
        raise ConnectionError("refusé")


def test_revoked_gateway_certificate_is_refused(store: Store, tmp_path: Path,
                                                mailstore_space: TrustSpace) -> None:
    space = mailstore_space
    with space.db.transaction() as session:
        issued = space.pki.issue_client(session, f"{LMTP_CLIENT_NAME} retiree")
        write_pair(issued, tmp_path / "gw.crt", tmp_path / "gw.key")
    context = space.tls_context()
    context.load_cert_chain(str(tmp_path / "gw.crt"), str(tmp_path / "gw.key"))
    assert store.raw_tls(context).startswith(b"220")  # valid: greeted by Dovecot
    with space.db.transaction() as session:
        space.pki.revoke(session, issued.certificate.serial_number, "keyCompromise")
        publish_crl(space, session)
    shutil.copy(space.pki.crl_path, store.settings.pki_dir / "crl.pem")
    config.write_client_ca(store.settings, store.service.paths)  # as the supervisor does
    with pytest.raises((ssl.SSLError, ConnectionError)):
        assert not store.raw_tls(context).startswith(b"220")
        raise ConnectionError("refusé")


def test_store_unreachable_is_a_temporary_failure(mailstore_space: TrustSpace) -> None:
    settings = mailstore_space.sibling_settings(lmtp_url=f"lmtps://localhost:{free_port()}")
    with mailstore_space.db.transaction() as session:
        cert, key = settings.lmtp_client_pair
        write_pair(mailstore_space.pki.issue_client(session, LMTP_CLIENT_NAME), cert, key)
    result = LmtpClient.for_settings(settings, timeout=3).deliver(
        _message("down"), SENDER, ["paul.durand@mss.test"])["paul.durand@mss.test"]
    assert result.error is not None and result.error.smtp_code == 451
    assert not result.uncertain  # nothing was sent: no in-doubt check needed


def test_client_checks_the_store_name_and_tls_version(mailstore_space: TrustSpace) -> None:
    settings = mailstore_space.sibling_settings(lmtp_url="lmtps://store.mss.test:2424")
    with mailstore_space.db.transaction() as session:
        cert, key = settings.lmtp_client_pair
        write_pair(mailstore_space.pki.issue_client(session, LMTP_CLIENT_NAME), cert, key)
    client = LmtpClient.for_settings(settings)
    assert client.tls is not None and client.tls.check_hostname
    assert client.tls.verify_mode == ssl.CERT_REQUIRED
    assert client.tls.minimum_version == ssl.TLSVersion.TLSv1_2
    assert (client.target, client.port) == ("store.mss.test", 2424)


def test_missing_client_certificate_is_a_clear_error(mailstore_space: TrustSpace) -> None:
    settings = mailstore_space.sibling_settings(lmtp_url="lmtps://localhost:2424")
    with pytest.raises(ConfigError, match="certificat client LMTP"):
        LmtpClient.for_settings(settings)


@pytest.mark.parametrize("url", ["lmtp://store:24", "lmtps://store", "lmtps://store:0",
                                 "lmtps://store:99999", "unix:relative/lmtp",
                                 "lmtps://user:pw@store:24", "lmtps://st ore:24",
                                 "lmtps://store:24/path", "https://store:24"])
def test_bad_lmtp_urls_are_refused_in_french(url: str) -> None:
    with pytest.raises(ConfigError, match="MSS_LMTP_URL"):
        Settings.load(data_dir="/nonexistent", environ={"MSS_LMTP_URL": url})


def test_hosts_settings() -> None:
    s = Settings.load(data_dir="/nonexistent", environ={
        "MSS_LMTP_URL": "lmtps://198.18.0.2:2424", "MSS_IMAP_HOST": "imap.mss.test",
        "MSS_SUBMISSION_HOST": "198.18.0.3"})
    assert s.lmtp_endpoint is not None and s.lmtp_endpoint.tls
    assert (s.lmtp_endpoint.host, s.lmtp_endpoint.port) == ("198.18.0.2", 2424)
    assert (s.effective_imap_host, s.effective_submission_host) == ("imap.mss.test",
                                                                     "198.18.0.3")
    default = Settings.load(data_dir="/nonexistent", environ={})
    assert default.lmtp_endpoint is None and default.effective_imap_host == "127.0.0.1"
    with pytest.raises(ConfigError, match="MSS_IMAP_HOST"):
        Settings.load(data_dir="/nonexistent", environ={"MSS_IMAP_HOST": "imap host:993"})


def test_unix_url_moves_dovecots_socket(mailstore_space: TrustSpace) -> None:
    """``unix:/path``: Dovecot's LMTP listener goes there, and the client follows."""
    settings = mailstore_space.sibling_settings()
    path = settings.data_dir / "sock" / "lmtp"
    path.parent.mkdir()
    settings = settings.replace(lmtp_url=f"unix:{path}")
    service = DovecotService(settings, mailstore_space.db, options=TEST_OPTIONS)
    service.start()
    try:
        assert path.is_socket()
        client = LmtpClient.for_settings(settings, timeout=10)
        assert client.tls is None and client.target == str(path)
        result = client.deliver(_message("unix"), SENDER, ["paul.durand@mss.test"])
        assert result["paul.durand@mss.test"].delivered
    finally:
        service.stop()
        shutil.rmtree(settings.data_dir.parent, ignore_errors=True)


def test_gateway_certificate_recognised_by_its_name_only() -> None:
    gw = {"subject": ((("commonName", f"{LMTP_CLIENT_NAME} gw1"),),)}
    assert is_gateway_certificate(gw)
    assert not is_gateway_certificate({"subject": ((("commonName", "Marie Martin"),),)})
    assert not is_gateway_certificate({"subject": ((("commonName", LMTP_CLIENT_NAME),),
                                                   (("serialNumber", "lps@mss.test"),))})
    assert not is_gateway_certificate({"subject": ((("commonName", LMTP_CLIENT_NAME + "x"),),)})
    assert not is_gateway_certificate({})


def test_init_writes_lmtp_client_and_names_the_hosts(tmp_path: Path) -> None:
    """``mss init`` with the several-hosts settings: the gateway's LMTP client certificate,
    and a server certificate naming the IMAP, submission and LMTP hosts."""
    env = {"MSS_LMTP_URL": "lmtps://198.18.0.2:2424", "MSS_IMAP_HOST": "imap.mss.test",
           "MSS_SUBMISSION_HOST": "198.18.0.3"}
    data = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "mss.cli", "--data-dir", str(data), "init"],
                            capture_output=True, text=True, timeout=120,
                            env={**_clean_env(), **env}, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    server = x509.load_pem_x509_certificate((data / "pki" / "server.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "imap.mss.test" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {
        "198.18.0.2", "198.18.0.3", "127.0.0.1"}
    client = x509.load_pem_x509_certificate((data / "pki" / "lmtp-client.crt").read_bytes())
    cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == LMTP_CLIENT_NAME
    assert (data / "pki" / "lmtp-client.key").stat().st_mode & 0o077 == 0


def _clean_env() -> dict[str, str]:
    import os
    return {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}


def test_init_warns_when_the_server_certificate_misses_a_host(tmp_path: Path) -> None:
    """A server certificate issued before the hosts were set is kept, and said to be wrong."""
    data = tmp_path / "data"
    command = [sys.executable, "-m", "mss.cli", "--data-dir", str(data), "init"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120,
                           env=_clean_env(), cwd=Path(__file__).parent.parent)
    assert first.returncode == 0, first.stderr
    before = (data / "pki" / "server.crt").read_bytes()
    again = subprocess.run(command, capture_output=True, text=True, timeout=120,
                           env={**_clean_env(), "MSS_IMAP_HOST": "imap.mss.test"},
                           cwd=Path(__file__).parent.parent)
    assert again.returncode == 0, again.stderr
    assert "ne nomme pas imap.mss.test" in again.stderr and "Traceback" not in again.stderr
    assert (data / "pki" / "server.crt").read_bytes() == before
