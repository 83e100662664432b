"""gateway.accept.protection: the per-message security choice and ``protect``, with ``openssl cms``
as
the independent other side; and the SMTP replies of gateway.errors."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Unpack

import pytest

from certs import smime
from certs.pki import Issued, Pki, Validity
from core.db import Database
from core.errors import ConfigError
from gateway.accept import protection
from gateway.accept.protection import Protection
from gateway.errors import (
    GatewayError,
    MailboxKeyUnreadable,
    ProtectionUnavailable,
    SecurityRequestInvalid,
    ascii_text,
)

NOW = datetime.now(UTC)
HEAD = (b"From: Alice Martin <alice@mss.test>\r\n"
        b"To: bob@mss.test\r\n"
        b"Subject: =?utf-8?q?Compte_rendu_Mme_Durand?=\r\n"
        b"Date: Mon, 02 Jun 2025 10:00:00 +0200\r\n"
        b"Message-ID: <abc@mss.test>\r\n"
        b"X-MSS-Trace: 42\r\n")
BODY = b"Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour,\r\nresultats joints.\r\n"
MESSAGE = HEAD + b"MIME-Version: 1.0\r\n" + BODY
SIGN, ENCRYPT = Protection(True, False), Protection(False, True)
BOTH, NONE = Protection(True, True), Protection(False, False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway_security")


@pytest.fixture(scope="module")
def ledger(workdir: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{workdir / 'x.db'}")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def pki(workdir: Path) -> Pki:
    return Pki.create(workdir / "pki", "Test", "mss.test")


def _issue(pki: Pki, ledger: Database, address: str, **validity: Unpack[Validity]) -> Issued:
    with ledger.transaction() as session:
        return pki.issue_mailbox(session, address, address.split("@")[0].title(), **validity)


@pytest.fixture(scope="module")
def alice(pki: Pki, ledger: Database) -> Issued:
    return _issue(pki, ledger, "alice@mss.test")


@pytest.fixture(scope="module")
def bob(pki: Pki, ledger: Database) -> Issued:
    return _issue(pki, ledger, "bob@mss.test")


def _signer(alice: Issued) -> tuple[Any, Any]:
    assert alice.private_key is not None
    return alice.certificate, alice.private_key


def openssl(*args: str | Path, stdin: bytes = b"") -> bytes:
    result = subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def _files(workdir: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    cert, key = workdir / f"{name}.pem", workdir / f"{name}.key"
    cert.write_bytes(issued.cert_pem())
    key.write_bytes(issued.key_pem())
    return cert, key


# ---------------------------------------------------------------------- the request
@pytest.mark.parametrize(("value", "expected"), [
    (b"sign, encrypt", BOTH), (b"SIGN", SIGN), (b"encrypt", ENCRYPT), (b"none", NONE),
    (b"sign+encrypt", BOTH), (b"  Encrypt \t sign ", BOTH), (b"sign,\r\n encrypt", BOTH),
])
def test_requested_reads_the_header(value: bytes, expected: Protection) -> None:
    raw = HEAD + b"MSS-Security: " + value + b"\r\n" + BODY
    assert protection.requested(raw) == expected


def test_requested_absent_and_several_fields() -> None:
    assert protection.requested(MESSAGE) is None
    # Only the message's own header section counts, not a line of the body.
    assert protection.requested(MESSAGE + b"MSS-Security: encrypt\r\n") is None
    two = HEAD + b"mss-security: sign\r\nMSS-SECURITY: encrypt\r\n" + BODY
    assert protection.requested(two) == BOTH


@pytest.mark.parametrize("value", [b"", b"sign, zip", b"none sign", b"chiffrer", b"sign;"])
def test_requested_refuses_malformed(value: bytes) -> None:
    with pytest.raises(SecurityRequestInvalid) as caught:
        protection.requested(HEAD + b"MSS-Security: " + value + b"\r\n" + BODY)
    assert caught.value.smtp_reply().startswith("554 5.6.0 En-tete MSS-Security invalide")
    assert caught.value.permanent


@pytest.mark.parametrize(("request_", "policy", "expected"), [
    (None, "none", NONE), (None, "sign+encrypt", BOTH), (ENCRYPT, "sign", BOTH),
    (NONE, "sign", SIGN), (NONE, "encrypt", ENCRYPT), (SIGN, "none", SIGN),
    (BOTH, "none", BOTH), (SIGN, "SIGN+ENCRYPT", BOTH),
])
def test_effective_policy_is_the_minimum(request_: Protection | None, policy: str,
                                         expected: Protection) -> None:
    assert protection.effective(request_, policy) == expected


def test_effective_unknown_policy() -> None:
    with pytest.raises(ConfigError):
        protection.effective(None, "maximum")


def test_labels() -> None:
    assert [p.label() for p in (NONE, SIGN, ENCRYPT, BOTH)] == [
        "none", "sign", "encrypt", "sign+encrypt"]
    assert all(Protection.from_label(p.label()) == p for p in (NONE, SIGN, ENCRYPT, BOTH))


def test_strip_request_is_byte_exact() -> None:
    raw = (b"From: a@mss.test\r\nMSS-Security: sign,\r\n\tencrypt\r\nTo: b@mss.test\r\n"
           b"mss-security : none\r\nX-MSS-Trace: 1\r\n\r\nbody\r\nMSS-Security: keep\r\n")
    assert protection.strip_request(raw) == (
        b"From: a@mss.test\r\nTo: b@mss.test\r\nX-MSS-Trace: 1\r\n\r\n"
        b"body\r\nMSS-Security: keep\r\n")
    lf = raw.replace(b"\r\n", b"\n")
    assert protection.strip_request(lf) == (
        b"From: a@mss.test\nTo: b@mss.test\nX-MSS-Trace: 1\n\nbody\nMSS-Security: keep\n")
    assert protection.strip_request(MESSAGE) is MESSAGE  # nothing to do: no copy
    assert protection.strip_request(b"MSS-Security: sign\r\n") == b""  # header only


def test_end_to_end(pki: Pki, alice: Issued, bob: Issued) -> None:
    assert not protection.end_to_end(MESSAGE)
    signed = smime.sign(MESSAGE, alice.certificate, _signer(alice)[1], [pki.issuing])
    assert protection.end_to_end(signed)
    assert protection.end_to_end(smime.encrypt(MESSAGE, [bob.certificate]))
    opaque = HEAD + b"Content-Type: application/x-pkcs7-mime; smime-type=signed-data\r\n\r\nx"
    assert protection.end_to_end(opaque)
    pgp = HEAD + (b'Content-Type: multipart/signed; protocol="application/pgp-signature";'
                  b' boundary=x\r\n\r\n--x--\r\n')
    assert not protection.end_to_end(pgp)


# ---------------------------------------------------------------------- protect
def test_protect_none_is_identity(alice: Issued) -> None:
    assert protection.protect(MESSAGE, NONE, signer=None, recipients=[]) is MESSAGE


def test_protect_sign_verifies_in_openssl(pki: Pki, alice: Issued, workdir: Path) -> None:
    signed = protection.protect(MESSAGE, SIGN, signer=_signer(alice), recipients=[],
                              chain=[pki.issuing])
    assert signed.startswith(HEAD)  # outer fields in the clear, as they were
    path = workdir / "signed.eml"
    path.write_bytes(signed)
    out = openssl("cms", "-verify", "-CAfile", pki.ca_pem_path, "-purpose", "smimesign",
                  "-in", path)
    assert out.replace(b"\r\n", b"\n") == BODY.replace(b"\r\n", b"\n")
    # Without the chain in the signature, ca.pem (issuing + root) still suffices.
    path.write_bytes(protection.protect(MESSAGE, SIGN, signer=_signer(alice), recipients=[]))
    openssl("cms", "-verify", "-CAfile", pki.ca_pem_path, "-purpose", "smimesign", "-in", path)


def test_protect_sign_then_encrypt_opens_in_openssl(pki: Pki, alice: Issued, bob: Issued,
                                                    workdir: Path) -> None:
    sealed = protection.protect(MESSAGE, BOTH, signer=_signer(alice),
                              recipients={"bob@mss.test": bob.certificate}, chain=[pki.issuing])
    assert sealed.startswith(HEAD) and b"Bonjour" not in sealed
    assert smime.is_encrypted(sealed)
    cert, key = _files(workdir, "bob", bob)
    (workdir / "sealed.eml").write_bytes(sealed)
    opened = openssl("cms", "-decrypt", "-recip", cert, "-inkey", key,
                     "-in", workdir / "sealed.eml")
    # Inside the envelope: the signed entity (RFC 8551 §3.7, sign then encrypt).
    assert b"multipart/signed" in opened.split(b"\n", 1)[0]
    (workdir / "opened.eml").write_bytes(opened)
    content = openssl("cms", "-verify", "-CAfile", pki.ca_pem_path, "-purpose", "smimesign",
                      "-in", workdir / "opened.eml")
    assert content.replace(b"\r\n", b"\n") == BODY.replace(b"\r\n", b"\n")


def test_protect_encrypt_only(bob: Issued, workdir: Path) -> None:
    sealed = protection.protect(MESSAGE, ENCRYPT, signer=None, recipients=[bob.certificate])
    cert, key = _files(workdir, "bob", bob)
    (workdir / "enc.eml").write_bytes(sealed)
    opened = openssl("cms", "-decrypt", "-recip", cert, "-inkey", key, "-in", workdir / "enc.eml")
    assert opened.replace(b"\r\n", b"\n") == BODY.replace(b"\r\n", b"\n")


def test_protect_refusals_name_the_problem(pki: Pki, ledger: Database, alice: Issued,
                                           bob: Issued) -> None:
    with pytest.raises(ProtectionUnavailable, match="pas de clé de signature") as caught:
        protection.protect(MESSAGE, SIGN, signer=None, recipients=[])
    assert caught.value.smtp_reply().startswith("554 5.7.5 ")
    with pytest.raises(ProtectionUnavailable,
                       match="pas de certificat de chiffrement pour carol@autre.test"):
        protection.protect(MESSAGE, BOTH, signer=_signer(alice),
                         recipients={"bob@mss.test": bob.certificate, "carol@autre.test": None})
    with pytest.raises(ProtectionUnavailable, match="aucun destinataire"):
        protection.protect(MESSAGE, ENCRYPT, signer=None, recipients=[])
    old = _issue(pki, ledger, "old@mss.test", not_before=NOW - timedelta(days=30),
                 not_after=NOW - timedelta(days=1))
    with pytest.raises(ProtectionUnavailable, match="old@mss.test.*expiré"):
        protection.protect(MESSAGE, ENCRYPT, signer=None, recipients=[old.certificate])
    with ledger.transaction() as session:
        server = pki.issue_server(session, ["relay.mss.test"])
    with pytest.raises(ProtectionUnavailable, match="non destiné à la messagerie"):
        protection.protect(MESSAGE, ENCRYPT, signer=None, recipients=[server.certificate])


def test_refusal_texts_hold_no_content(alice: Issued) -> None:
    with pytest.raises(GatewayError) as caught:
        protection.protect(MESSAGE, ENCRYPT, signer=None, recipients={"x@autre.test": None})
    text = caught.value.smtp_reply(utf8=True)
    assert "Compte" not in text and "Bonjour" not in text and "Durand" not in text


# ---------------------------------------------------------------------- keys
def test_load_mailbox_key(alice: Issued) -> None:
    pem = alice.key_pem(b"s3cret").decode()
    key = protection.load_mailbox_key(pem, b"s3cret")
    assert key.public_key() == alice.certificate.public_key()
    with pytest.raises(MailboxKeyUnreadable) as caught:
        protection.load_mailbox_key(pem, b"wrong")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "PRIVATE KEY" not in str(caught.value) and "s3cret" not in str(caught.value)
    assert caught.value.smtp_reply().startswith("451 4.7.5 ")
    with pytest.raises(MailboxKeyUnreadable):
        protection.load_mailbox_key("-----BEGIN ENCRYPTED PRIVATE KEY-----\nxx\n", b"s3cret")
    with pytest.raises(MailboxKeyUnreadable):
        protection.load_mailbox_key(alice.key_pem().decode(), b"s3cret")  # not encrypted


# ---------------------------------------------------------------------- replies
def test_smtp_reply_is_one_ascii_line() -> None:
    error = ProtectionUnavailable("Refusé : « x »\r\n250 2.0.0 Ok — fin…")
    assert error.smtp_reply() == '554 5.7.5 Refuse : " x " 250 2.0.0 Ok - fin...'
    assert error.smtp_reply(utf8=True) == "554 5.7.5 Refusé : « x » 250 2.0.0 Ok — fin…"
    custom = GatewayError("x", smtp_code=550, enhanced="5.7.1", code="other")
    assert (custom.smtp_reply(), custom.code, custom.permanent) == ("550 5.7.1 x", "other", True)
    assert GatewayError("y").smtp_reply() == "451 4.3.0 y"
    assert ascii_text("Échec\x00\tà\u202fl'envoi") == "Echec? a l'envoi"
