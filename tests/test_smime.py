"""S/MIME sign / verify / encrypt / decrypt, with ``openssl cms`` as the independent other side."""

from __future__ import annotations

import base64
import email
import email.policy
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Unpack

import pytest
from cryptography.hazmat.primitives import serialization

from certs import smime
from certs.errors import (
    CertificateExpired,
    CertificateRevoked,
    DecryptionFailed,
    MalformedSmime,
    NotSigned,
    SignatureInvalid,
    UntrustedCertificate,
)
from certs.pki import Issued, Pki, Validity
from certs.validation import TrustStore
from core.db import Database
from core.errors import MssError

NOW = datetime.now(UTC)
OUTER = (
    b"From: Alice Martin <alice@mss.test>\r\n"
    b"To: bob@mss.test\r\n"
    b"Subject: =?utf-8?q?Compte_rendu?=\r\n"
    b"Date: Mon, 02 Jun 2025 10:00:00 +0200\r\n"
    b"Message-ID: <abc@mss.test>\r\n"
    b"X-MSS-Trace: 42\r\n"
)
ENTITY = (
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Bonjour,\r\nFrom here on, a line with a dot:\r\n.\r\ntrailing space \r\n"
)
MESSAGE = OUTER + b"MIME-Version: 1.0\r\n" + ENTITY

# 8-bit UTF-8 text and an 8-bit attachment with a non-ASCII file name.
EIGHT_BIT_TEXT = "Patient âgé, fièvre à 39 °C — à revoir.\r\n"
ATTACHMENT = "nom;prénom\r\nMüller;Zoé\r\n".encode()
EIGHT_BIT = OUTER + b"MIME-Version: 1.0\r\n" + (
    b'Content-Type: multipart/mixed; boundary="sep"\r\n\r\n'
    b"--sep\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n" + EIGHT_BIT_TEXT.encode() +
    b"--sep\r\nContent-Type: text/csv; charset=utf-8\r\n"
    + 'Content-Disposition: attachment; filename="résultats.csv"\r\n'.encode() +
    b"Content-Transfer-Encoding: 8bit\r\n\r\n" + ATTACHMENT + b"--sep--\r\n"
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smime")


@pytest.fixture(scope="module")
def ledger(workdir: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{workdir / 'mss.db'}")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def pki(workdir: Path) -> Pki:
    return Pki.create(workdir / "pki", "Opérateur MSS", "mss.test")


@pytest.fixture(scope="module")
def store(pki: Pki) -> TrustStore:
    return TrustStore.from_pem(pki.ca_pem_path.read_bytes())


def _mailbox(pki: Pki, ledger: Database, address: str, **validity: Unpack[Validity]) -> Issued:
    with ledger.transaction() as session:
        return pki.issue_mailbox(session, address, address.split("@")[0].title(), **validity)


@pytest.fixture(scope="module")
def alice(pki: Pki, ledger: Database) -> Issued:
    return _mailbox(pki, ledger, "alice@mss.test")


@pytest.fixture(scope="module")
def bob(pki: Pki, ledger: Database) -> Issued:
    return _mailbox(pki, ledger, "bob@mss.test")


def _files(workdir: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    cert, key = workdir / f"{name}.pem", workdir / f"{name}.key"
    cert.write_bytes(issued.cert_pem())
    key.write_bytes(issued.key_pem())
    return cert, key


def openssl(*args: str | Path, stdin: bytes = b"") -> bytes:
    result = subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def sign_alice(pki: Pki, alice: Issued, message: bytes = MESSAGE) -> bytes:
    assert alice.private_key is not None
    return smime.sign(message, alice.certificate, alice.private_key, [pki.issuing])


def parse(message: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


# ---------------------------------------------------------------------- sign / verify
def test_sign_verify_round_trip(pki: Pki, alice: Issued, store: TrustStore) -> None:
    signed = sign_alice(pki, alice)
    assert signed.startswith(OUTER)  # outer header fields kept, in the clear, as they were
    head = parse(signed)
    assert head.get_content_type() == "multipart/signed"
    assert head.get_param("protocol") == "application/pkcs7-signature"
    assert head.get_param("micalg") == "sha-256"
    assert smime.is_signed(signed) and not smime.is_encrypted(signed)
    assert not smime.is_signed(MESSAGE)

    verified = smime.verify(signed, store)
    assert verified.signer == alice.certificate
    assert verified.addresses == ["alice@mss.test"]
    assert verified.subject == alice.certificate.subject.rfc4514_string()
    assert verified.content == ENTITY
    assert verified.signing_time is not None
    assert abs(verified.signing_time - datetime.now(UTC)) < timedelta(minutes=1)
    # A hop that turns CRLF into LF must not break the signature.
    assert smime.verify(signed.replace(b"\r\n", b"\n"), store).content == ENTITY


def test_sign_accepts_lf_input(pki: Pki, alice: Issued, store: TrustStore) -> None:
    signed = sign_alice(pki, alice, MESSAGE.replace(b"\r\n", b"\n"))
    assert smime.verify(signed, store).content == ENTITY


def test_tampered_content_is_detected(pki: Pki, alice: Issued, store: TrustStore) -> None:
    signed = sign_alice(pki, alice)
    with pytest.raises(SignatureInvalid, match="modifié"):
        smime.verify(signed.replace(b"Bonjour", b"Bonsoir"), store)


def test_every_corrupted_byte_of_the_signature_is_a_clear_refusal(
        pki: Pki, alice: Issued, store: TrustStore) -> None:
    """Each byte of the CMS structure zeroed in turn (certificates, signer info, attributes):
    verify passes or raises an MssError, never a parser's own exception. A sweep of this kind
    found an unknown key type (UnsupportedAlgorithm), an X.509 version 4 (InvalidVersion), a
    subject that failed to parse only when first read, and an empty attribute (IndexError)."""
    signed = sign_alice(pki, alice)
    start = signed.rindex(b"\r\n\r\n") + 4
    end = signed.rindex(b"\r\n--")
    der = base64.b64decode(signed[start:end])
    outcomes: set[str] = set()
    for i in range(len(der)):
        mutated = der[:i] + (b"\xff" if der[i] == 0 else b"\x00") + der[i + 1:]
        try:
            smime.verify(signed[:start] + base64.encodebytes(mutated) + signed[end:], store)
            outcomes.add("pass")
        except MssError as exc:
            assert exc.message, i
            outcomes.add(type(exc).__name__)
    assert {"MalformedSmime", "SignatureInvalid"} <= outcomes


def test_signer_from_another_ca_is_untrusted(alice: Issued, workdir: Path,
                                             ledger: Database) -> None:
    other = Pki.create(workdir / "other", "Autre", "autre.test")
    mallory = _mailbox(other, ledger, "mallory@autre.test")
    assert mallory.private_key is not None
    signed = smime.sign(MESSAGE, mallory.certificate, mallory.private_key, [other.issuing])
    own = TrustStore.from_pem((workdir / "pki" / "ca.pem").read_bytes())
    with pytest.raises(UntrustedCertificate):
        smime.verify(signed, own)


def test_expired_signer(pki: Pki, ledger: Database, store: TrustStore) -> None:
    old = _mailbox(pki, ledger, "old@mss.test", not_before=NOW - timedelta(days=1100),
                   not_after=NOW - timedelta(days=5))
    assert old.private_key is not None
    signed = smime.sign(MESSAGE, old.certificate, old.private_key, [pki.issuing])
    with pytest.raises(CertificateExpired, match="expiré"):
        smime.verify(signed, store)


def test_verify_at_an_explicit_time(pki: Pki, ledger: Database, store: TrustStore) -> None:
    brief = _mailbox(pki, ledger, "brief@mss.test", not_after=NOW + timedelta(hours=1))
    assert brief.private_key is not None
    signed = smime.sign(MESSAGE, brief.certificate, brief.private_key, [pki.issuing])
    smime.verify(signed, store, at=NOW + timedelta(minutes=30))
    with pytest.raises(CertificateExpired):
        smime.verify(signed, store, at=NOW + timedelta(hours=2))


def test_revoked_signer(pki: Pki, ledger: Database) -> None:
    carol = _mailbox(pki, ledger, "carol@mss.test")
    assert carol.private_key is not None
    with ledger.transaction() as session:
        pki.revoke(session, carol.certificate.serial_number, "keyCompromise")
        crl = pki.make_crl(session)
    store = TrustStore.from_pem(pki.ca_pem_path.read_bytes(),
                                crl.public_bytes(serialization.Encoding.PEM))
    signed = smime.sign(MESSAGE, carol.certificate, carol.private_key, [pki.issuing])
    with pytest.raises(CertificateRevoked, match="révoqué"):
        smime.verify(signed, store)


def test_unsigned_messages(bob: Issued, store: TrustStore) -> None:
    with pytest.raises(NotSigned):
        smime.verify(MESSAGE, store)
    with pytest.raises(NotSigned):
        smime.verify(smime.encrypt(MESSAGE, [bob.certificate]), store)


# ---------------------------------------------------------------------- encrypt / decrypt
def test_encrypt_decrypt_one_recipient(bob: Issued) -> None:
    assert bob.private_key is not None
    encrypted = smime.encrypt(MESSAGE, [bob.certificate])
    assert encrypted.startswith(OUTER) and b"Bonjour" not in encrypted
    head = parse(encrypted)
    assert head.get_content_type() == "application/pkcs7-mime"
    assert head.get_param("smime-type") == "enveloped-data"
    assert head["Content-Transfer-Encoding"] == "base64"
    assert smime.is_encrypted(encrypted) and not smime.is_signed(encrypted)
    assert smime.decrypt(encrypted, bob.certificate, bob.private_key) == MESSAGE


def test_encrypt_to_two_recipients(pki: Pki, ledger: Database, alice: Issued,
                                   bob: Issued) -> None:
    assert alice.private_key is not None and bob.private_key is not None
    encrypted = smime.encrypt(MESSAGE, [alice.certificate, bob.certificate])
    assert smime.decrypt(encrypted, alice.certificate, alice.private_key) == MESSAGE
    assert smime.decrypt(encrypted, bob.certificate, bob.private_key) == MESSAGE
    dave = _mailbox(pki, ledger, "dave@mss.test")
    assert dave.private_key is not None
    with pytest.raises(DecryptionFailed):
        smime.decrypt(encrypted, dave.certificate, dave.private_key)


def test_decrypt_failures(alice: Issued, bob: Issued) -> None:
    assert alice.private_key is not None
    encrypted = smime.encrypt(MESSAGE, [bob.certificate])
    with pytest.raises(DecryptionFailed, match="déchiffrer"):
        smime.decrypt(encrypted, alice.certificate, alice.private_key)
    with pytest.raises(DecryptionFailed):  # right certificate, wrong key
        smime.decrypt(encrypted, bob.certificate, alice.private_key)
    with pytest.raises(MalformedSmime):
        smime.decrypt(MESSAGE, bob.certificate, alice.private_key)
    broken = encrypted[: len(encrypted) // 2]
    with pytest.raises(MalformedSmime):
        smime.decrypt(broken, bob.certificate, alice.private_key)


def test_sign_then_encrypt(pki: Pki, alice: Issued, bob: Issued, store: TrustStore) -> None:
    assert bob.private_key is not None
    sealed = smime.encrypt(sign_alice(pki, alice), [bob.certificate])
    assert smime.is_encrypted(sealed)
    opened = smime.decrypt(sealed, bob.certificate, bob.private_key)
    assert smime.is_signed(opened)
    verified = smime.verify(opened, store)
    assert verified.addresses == ["alice@mss.test"] and verified.content == ENTITY


def test_eight_bit_body_and_attachment_survive(pki: Pki, alice: Issued, bob: Issued,
                                               store: TrustStore) -> None:
    assert bob.private_key is not None
    signed = sign_alice(pki, alice, EIGHT_BIT)
    assert signed.isascii()  # re-encoded before signing: safe on any transport
    text, attachment = parse(smime.verify(signed, store).content).iter_parts()
    original_text, original_attachment = parse(EIGHT_BIT).iter_parts()
    assert text.get_content() == original_text.get_content()
    assert EIGHT_BIT_TEXT.strip() in text.get_content()
    assert attachment.get_filename() == "résultats.csv"
    assert attachment.get_content() == original_attachment.get_content()
    # Encryption carries 8-bit content as is.
    encrypted = smime.encrypt(EIGHT_BIT, [bob.certificate])
    assert smime.decrypt(encrypted, bob.certificate, bob.private_key) == EIGHT_BIT


# ---------------------------------------------------------------------- openssl interop
def test_openssl_signature_verifies_in_mss(pki: Pki, alice: Issued, store: TrustStore,
                                           workdir: Path) -> None:
    cert, key = _files(workdir, "alice", alice)
    base = ("cms", "-sign", "-signer", cert, "-inkey", key, "-certfile", pki.ca_pem_path,
            "-from", "alice@mss.test", "-to", "bob@mss.test", "-subject", "Essai")
    detached = openssl(*base, stdin=ENTITY)
    assert smime.verify(detached, store).content == ENTITY
    opaque = openssl(*base, "-nodetach", stdin=ENTITY)
    assert smime.is_signed(opaque)
    assert smime.verify(opaque, store).addresses == ["alice@mss.test"]
    pss = openssl(*base, "-md", "sha384", "-keyopt", "rsa_padding_mode:pss", stdin=ENTITY)
    assert smime.verify(pss, store).signer == alice.certificate
    with pytest.raises(SignatureInvalid):
        smime.verify(detached.replace(b"Bonjour", b"Bonsoir"), store)


def test_mss_signature_verifies_in_openssl(pki: Pki, alice: Issued, workdir: Path) -> None:
    signed = workdir / "signed.eml"
    signed.write_bytes(sign_alice(pki, alice, EIGHT_BIT))
    for tool in ("cms", "smime"):
        out = openssl(tool, "-verify", "-CAfile", pki.ca_pem_path, "-purpose", "smimesign",
                      "-in", signed)
        assert parse(out).get_content_type() == "multipart/mixed"


def test_openssl_envelope_decrypts_in_mss(bob: Issued, workdir: Path) -> None:
    assert bob.private_key is not None
    cert, _ = _files(workdir, "bob", bob)
    enveloped = openssl("cms", "-encrypt", "-aes256", "-from", "alice@mss.test",
                        "-subject", "Essai", cert, stdin=ENTITY)
    opened = smime.decrypt(enveloped, bob.certificate, bob.private_key)
    assert opened.endswith(b"MIME-Version: 1.0\r\n" + ENTITY)
    assert parse(opened)["Subject"] == "Essai"


def test_mss_envelope_decrypts_in_openssl(bob: Issued, workdir: Path) -> None:
    cert, key = _files(workdir, "bob", bob)
    sealed = workdir / "sealed.eml"
    sealed.write_bytes(smime.encrypt(MESSAGE, [bob.certificate]))
    assert openssl("cms", "-decrypt", "-recip", cert, "-inkey", key, "-in", sealed) == ENTITY
