"""Logging in to the real Dovecot that mss configures: passwords against mss's accounts,
TLS-only, locks and suspensions, client certificates (SASL EXTERNAL), the master user."""

from __future__ import annotations

import imaplib
import socket
import ssl
import warnings
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from mailstore.credentials import master_credentials
from mailstore.service import DovecotService
from trust_space import accounts
from trust_space.models import Account

if TYPE_CHECKING:
    from tests.mailstore_fixtures import TrustSpace

pytest_plugins = ["tests.mailstore_fixtures"]
PASSWORD = "Demo-Passw0rd"


def _login_fails(space: TrustSpace, user: str, password: str) -> bytes:
    conn = space.imaps()
    with pytest.raises(imaplib.IMAP4.error) as failure:
        conn.login(user, password)
    conn.shutdown()
    return str(failure.value).encode()


def _external(space: TrustSpace, card: str, authzid: bytes = b"") -> tuple[str, list]:
    conn = space.imaps(card)
    try:
        return conn.authenticate("EXTERNAL", lambda _: authzid)
    finally:
        conn.shutdown()


def test_login_over_imaps(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    conn = mailstore_space.imaps()
    assert conn.login(mailstore_space.address("marie"), PASSWORD)[0] == "OK"
    assert conn.select("INBOX")[0] == "OK"
    conn.logout()


def test_dovecot_verifies_the_production_argon2_parameters(
        dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    """The suite hashes with cheap parameters (tests/conftest.py); a password hashed as
    ``mss`` does outside it (t=3, m=64 MiB) is checked by Dovecot's libsodium too."""
    emma = mailstore_space.address("emma")
    with mailstore_space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == emma))
        assert account is not None
        saved = account.password_hash
        account.password_hash = accounts.PRODUCTION_HASHER.hash(PASSWORD)
    try:
        conn = mailstore_space.imaps()
        assert conn.login(emma, PASSWORD)[0] == "OK"
        conn.logout()
        assert b"[AUTHENTICATIONFAILED]" in _login_fails(mailstore_space, emma, "Autre-Passw0rd")
    finally:
        with mailstore_space.db.transaction() as session:
            account = session.scalar(select(Account).where(Account.login == emma))
            assert account is not None
            account.password_hash, account.failed_attempts = saved, 0


def test_login_after_starttls(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    conn = imaplib.IMAP4("127.0.0.1", mailstore_space.settings.imap_port, timeout=10)
    conn.starttls(mailstore_space.tls_context())
    assert conn.login(mailstore_space.address("marie"), PASSWORD)[0] == "OK"
    conn.logout()


def test_tls_below_1_2_refused(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    context = mailstore_space.tls_context()
    with warnings.catch_warnings():  # setting an old version is itself deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        imaplib.IMAP4_SSL("127.0.0.1", mailstore_space.settings.imaps_port,
                          ssl_context=context, timeout=10)


def test_bad_password_is_authenticationfailed(dovecot: DovecotService,
                                              mailstore_space: TrustSpace) -> None:
    assert b"[AUTHENTICATIONFAILED]" in _login_fails(
        mailstore_space, mailstore_space.address("marie"), "wrong-Passw0rd")


def test_unknown_login_is_authenticationfailed(dovecot: DovecotService,
                                               mailstore_space: TrustSpace) -> None:
    assert b"[AUTHENTICATIONFAILED]" in _login_fails(mailstore_space, "nobody@mss.test", PASSWORD)


@pytest.mark.parametrize("who", ["louis", "sophie", "hugo"])
def test_locked_or_suspended_cannot_log_in(dovecot: DovecotService, mailstore_space: TrustSpace,
                                           who: str) -> None:
    """louis: account locked (locked_until ahead); sophie: account suspended; hugo: mailbox
    suspended. Right password, refused all the same."""
    assert b"[AUTHENTICATIONFAILED]" in _login_fails(
        mailstore_space, mailstore_space.address(who), PASSWORD)


def test_login_in_clear_refused_even_from_localhost(dovecot: DovecotService,
                                                    mailstore_space: TrustSpace) -> None:
    """Dovecot counts loopback as secure; mss's passdb still demands TLS."""
    conn = imaplib.IMAP4("127.0.0.1", mailstore_space.settings.imap_port, timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        conn.login(mailstore_space.address("marie"), PASSWORD)
    conn.shutdown()


def test_login_before_starttls_refused_from_the_network(dovecot: DovecotService,
                                                        mailstore_space: TrustSpace) -> None:
    """From another address (127.0.0.2 stands for a remote client), Dovecot itself announces
    LOGINDISABLED and refuses LOGIN before STARTTLS."""
    sock = socket.create_connection(("127.0.0.1", mailstore_space.settings.imap_port),
                                    timeout=10, source_address=("127.0.0.2", 0))
    stream = sock.makefile("rwb")
    stream.readline()
    stream.write(b"a CAPABILITY\r\nb LOGIN marie.martin@mss.test " + PASSWORD.encode() + b"\r\n")
    stream.flush()
    lines = []
    while not lines or not lines[-1].startswith(b"b "):  # up to the tagged reply to LOGIN
        lines.append(stream.readline())
    sock.close()
    replies = b"".join(lines)
    assert b"LOGINDISABLED" in replies
    assert b"b NO" in replies and b"b OK" not in replies


def test_login_by_national_id(dovecot: DovecotService, mailstore_space: TrustSpace) -> None:
    conn = mailstore_space.imaps()
    assert conn.login("810000000001", PASSWORD)[0] == "OK"
    conn.logout()


def test_external_with_card_certificate(dovecot: DovecotService,
                                        mailstore_space: TrustSpace) -> None:
    conn = mailstore_space.imaps("marie")
    assert conn.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
    assert conn.select("INBOX")[0] == "OK"
    conn.logout()


@pytest.mark.parametrize("card", ["stranger", "revoked"])
def test_external_refused(dovecot: DovecotService, mailstore_space: TrustSpace,
                          card: str) -> None:
    """stranger: a valid card of a professional mss does not know; revoked: on the CRL."""
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        _external(mailstore_space, card)


def test_external_cannot_claim_another_identity(dovecot: DovecotService,
                                                mailstore_space: TrustSpace) -> None:
    with pytest.raises(imaplib.IMAP4.error):
        _external(mailstore_space, "marie", mailstore_space.address("paul").encode())


def test_external_with_suspended_mailbox_refused(dovecot: DovecotService,
                                                 mailstore_space: TrustSpace) -> None:
    with pytest.raises(imaplib.IMAP4.error):
        _external(mailstore_space, "hugo")


def test_external_with_applicative_certificate(dovecot: DovecotService,
                                               mailstore_space: TrustSpace) -> None:
    cert = x509.load_pem_x509_certificate(mailstore_space.cards["lps"][0].read_bytes())
    serial = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    assert serial[0].value == mailstore_space.address("lps")  # the mapping key, not the CN
    conn = mailstore_space.imaps("lps")
    assert conn.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
    conn.logout()


def test_master_user_opens_a_mailbox(dovecot: DovecotService,
                                     mailstore_space: TrustSpace) -> None:
    creds = master_credentials(mailstore_space.settings)
    conn = mailstore_space.imaps()
    assert conn.login(creds.login_for(mailstore_space.address("julie")), creds.secret)[0] == "OK"
    conn.logout()
    assert "secret" not in repr(creds)


def test_master_user_wrong_secret_refused(dovecot: DovecotService,
                                          mailstore_space: TrustSpace) -> None:
    creds = master_credentials(mailstore_space.settings)
    assert b"AUTHENTICATIONFAILED" in _login_fails(
        mailstore_space, creds.login_for(mailstore_space.address("julie")), "not-the-secret")


@pytest.mark.parametrize("who", ["louis", "sophie", "hugo"])
def test_master_user_cannot_open_locked_or_suspended(dovecot: DovecotService,
                                                     mailstore_space: TrustSpace,
                                                     who: str) -> None:
    creds = master_credentials(mailstore_space.settings)
    _login_fails(mailstore_space, creds.login_for(mailstore_space.address(who)), creds.secret)
