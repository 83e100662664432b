"""Attacks on transport security (issue #14 item 9), through the real Dovecot and gateway.

- IMAP accepted CBC-SHA1, ARIA and CAMELLIA suites: it now takes the submission ports' one list
  (``certs.suites``), so a TLS 1.2 client offering only those gets no handshake.
- IMAP offered PLAIN/LOGIN before STARTTLS: LOGINDISABLED and no AUTH= until TLS; on a
  connection from the server's own address (which Dovecot 2.3.19 counts as "secured", a rule
  no setting changes) a password in clear is refused by mss's auth policy, and not counted.
- The relay port advertised ``AUTH LOGIN PLAIN``, which could only fail: it advertises none.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.gateway_fixtures import Operator
from tests.mailstore_fixtures import PASSWORD

pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures"]
# TLS 1.2 suites refused everywhere users connect (RSA server certificate).
WEAK_SUITES = {
    "CBC-SHA1": "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA",
    "CAMELLIA": "ECDHE-RSA-CAMELLIA128-SHA256:DHE-RSA-CAMELLIA128-SHA:CAMELLIA128-SHA",
    "ARIA": "ECDHE-ARIA128-GCM-SHA256:ECDHE-ARIA256-GCM-SHA384:DHE-RSA-ARIA128-GCM-SHA256",
    "no forward secrecy": "AES128-GCM-SHA256:AES256-GCM-SHA384",
    "CBC-SHA2": "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384",
}
MODERN = "ECDHE-RSA-AES128-GCM-SHA256"


def _client_context(op: Operator, suites: str) -> ssl.SSLContext:
    context = op.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("@SECLEVEL=0:" + suites)
    return context


@contextmanager
def _tls(port: int, context: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        yield tls


def _handshake(port: int, context: ssl.SSLContext) -> str:
    """Connect with TLS (the handshake is in ``wrap_socket``); the suite agreed."""
    with _tls(port, context) as tls:
        return tls.cipher()[0]


@pytest.mark.parametrize("weak", sorted(WEAK_SUITES))
def test_imap_and_submission_refuse_weak_tls12_suites(operator: Operator, weak: str) -> None:
    context = _client_context(operator, WEAK_SUITES[weak])
    for port in (operator.settings.imaps_port, operator.port("submissions")):
        with pytest.raises(ssl.SSLError):
            _handshake(port, context)
    with smtplib.SMTP("127.0.0.1", operator.port("submission"), timeout=10) as smtp, \
            pytest.raises(ssl.SSLError):
        smtp.starttls(context=context)
    imap = imaplib.IMAP4("127.0.0.1", operator.settings.imap_port, timeout=10)
    try:
        with pytest.raises(ssl.SSLError):
            imap.starttls(ssl_context=context)
    finally:
        imap.sock.close()


def test_a_modern_suite_and_tls13_work(operator: Operator) -> None:
    context = _client_context(operator, MODERN)
    for port in (operator.settings.imaps_port, operator.port("submissions")):
        assert _handshake(port, context) == MODERN
    tls13 = operator.client_context()
    tls13.minimum_version = ssl.TLSVersion.TLSv1_3
    with _tls(operator.settings.imaps_port, tls13) as tls:
        assert tls.version() == "TLSv1.3"


class _FromAddress(imaplib.IMAP4):
    """imaplib from a chosen local address (127.0.0.2: loopback, not the server's address)."""

    def __init__(self, source: str, *args: Any, **kwargs: Any) -> None:
        self.source = source
        super().__init__(*args, **kwargs)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def _capabilities(imap: imaplib.IMAP4) -> set[str]:
    typ, data = imap.capability()
    assert typ == "OK"
    return set(data[0].decode().upper().split())


def test_imap_offers_no_login_before_starttls(operator: Operator) -> None:
    with _FromAddress("127.0.0.2", "127.0.0.1", operator.settings.imap_port, timeout=10) as imap:
        before = _capabilities(imap)
        assert "LOGINDISABLED" in before and "STARTTLS" in before
        assert not {c for c in before if c.startswith("AUTH=")}
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(operator.space.address("marie"), PASSWORD)
        imap.starttls(ssl_context=operator.client_context())
        after = _capabilities(imap)
        assert "AUTH=PLAIN" in after and "LOGINDISABLED" not in after
        assert imap.login(operator.space.address("marie"), PASSWORD)[0] == "OK"


def test_password_in_clear_from_the_server_address_is_refused(operator: Operator) -> None:
    """127.0.0.1 → 127.0.0.1: Dovecot itself offers LOGIN (its same-address rule), mss's auth
    policy refuses the right password all the same, and does not count it as a guess."""
    from sqlalchemy import select

    from trust_space.models import Account

    paul = operator.space.address("paul")
    with imaplib.IMAP4("127.0.0.1", operator.settings.imap_port, timeout=10) as imap:
        with pytest.raises(imaplib.IMAP4.error) as refused:
            imap.login(paul, PASSWORD)
    assert b"TLS" in str(refused.value).encode()
    with operator.space.db.transaction() as session:
        account = session.execute(select(Account).where(Account.login == paul)).scalar_one()
        assert account.failed_attempts == 0


def test_relay_port_advertises_no_auth(operator: Operator) -> None:
    pki = operator.settings.pki_dir
    context = operator.client_context()
    context.load_cert_chain(str(pki / "operator.crt"), str(pki / "operator.key"))
    with smtplib.SMTP("127.0.0.1", operator.port("relay"), timeout=30) as smtp:
        smtp.starttls(context=context)
        code, text = smtp.ehlo()
        assert code == 250 and b"AUTH" not in text.upper()
        assert not smtp.has_extn("auth")
        code, _ = smtp.docmd("AUTH", "PLAIN AGEAYg==")
        assert code >= 500
    with smtplib.SMTP("127.0.0.1", operator.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=operator.client_context())
        smtp.ehlo()
        assert smtp.has_extn("auth") and "PLAIN" in smtp.esmtp_features["auth"].upper()
