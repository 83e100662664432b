"""``certs.cms_check``: what an S/MIME message's CMS holds, checked against its MIME type
(issue #14 item 8). Envelopes and signatures made by ``certs.smime`` and by ``openssl cms``
(an independent implementation); hostile bodies made by hand."""

from __future__ import annotations

import base64
import os
import subprocess
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certs import smime
from certs.cms_check import CmsSummary, RecipientId, addressed_to, read_cms, read_message
from certs.errors import MalformedSmime
from certs.pki import Issued, Pki
from core.db import Database

HEAD = (b"From: alice@mss.test\r\nTo: bob@mss.test\r\nSubject: Compte rendu\r\n"
        b"Message-ID: <cms@mss.test>\r\nMIME-Version: 1.0\r\n")
MESSAGE = HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour,\r\nresultats.\r\n"
ENVELOPE_TYPE = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cms_check")


@pytest.fixture(scope="module")
def ledger(workdir: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{workdir / 'x.db'}")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def pki(workdir: Path) -> Pki:
    return Pki.create(workdir / "pki", "Test", "mss.test")


@pytest.fixture(scope="module")
def alice(pki: Pki, ledger: Database) -> Issued:
    with ledger.transaction() as session:
        return pki.issue_mailbox(session, "alice@mss.test", "Alice")


@pytest.fixture(scope="module")
def bob(pki: Pki, ledger: Database) -> Issued:
    with ledger.transaction() as session:
        return pki.issue_mailbox(session, "bob@mss.test", "Bob")


def openssl(*args: str | Path, stdin: bytes = b"") -> bytes:
    result = subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def _files(workdir: Path, issued: Issued) -> tuple[Path, Path]:
    name = issued.certificate.serial_number
    cert, key = workdir / f"{name}.pem", workdir / f"{name}.key"
    cert.write_bytes(issued.cert_pem())
    key.write_bytes(issued.key_pem())
    return cert, key


def _pkcs7(der: bytes, content_type: bytes = ENVELOPE_TYPE) -> bytes:
    return (HEAD + content_type + b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(der).replace(b"\n", b"\r\n"))


def _der(message: bytes) -> bytes:
    return base64.b64decode(message.split(b"\r\n\r\n", 1)[1])


def _refused(message: bytes, words: str) -> None:
    with pytest.raises(MalformedSmime) as err:
        read_message(message)
    assert words in err.value.message
    assert b"Bonjour" not in err.value.message.encode()  # never the content


def _sign(issued: Issued, message: bytes = MESSAGE) -> bytes:
    assert issued.private_key is not None
    return smime.sign(message, issued.certificate, issued.private_key, [])


def _with_signature(signed: bytes, der: bytes) -> bytes:
    """``signed`` (a multipart/signed from certs.smime) with ``der`` as its signature part."""
    head, rest = signed.split(b"filename=smime.p7s\r\n\r\n", 1)
    end = rest[rest.index(b"--"):]
    return (head + b"filename=smime.p7s\r\n\r\n"
            + base64.encodebytes(der).replace(b"\n", b"\r\n") + end)


def _signature(signed: bytes) -> bytes:
    rest = signed.split(b"filename=smime.p7s\r\n\r\n", 1)[1]
    return base64.b64decode(rest[:rest.index(b"--")])


# ---------------------------------------------------------------------- envelopes
def test_an_envelope_names_its_recipients(alice: Issued, bob: Issued) -> None:
    found = read_message(smime.encrypt(MESSAGE, [bob.certificate]))
    assert found.content_type == "enveloped_data" and found.enveloped
    assert len(found.recipients) == 1 and found.other_recipients == 0
    assert addressed_to(found, bob.certificate)
    assert not addressed_to(found, alice.certificate)  # the wrong recipient
    both = read_message(smime.encrypt(MESSAGE, [alice.certificate, bob.certificate]))
    assert addressed_to(both, alice.certificate) and addressed_to(both, bob.certificate)


@pytest.mark.parametrize("options", [["-aes256"], ["-aes256", "-keyid"], ["-aes-256-gcm"]])
def test_openssl_envelopes(workdir: Path, alice: Issued, bob: Issued,
                           options: list[str]) -> None:
    """Issuer and serial, subject key identifier (-keyid, RFC 5652 §6.2.1) and
    authEnveloped-data (AES-GCM, RFC 5083), from an independent implementation."""
    cert, _ = _files(workdir, bob)
    sealed = openssl("cms", "-encrypt", *options, cert, stdin=MESSAGE)
    found = read_message(sealed)
    assert found.enveloped
    assert addressed_to(found, bob.certificate) and not addressed_to(found, alice.certificate)
    assert (found.recipients[0].key_id is not None) == ("-keyid" in options)


def test_key_agreement_recipients(workdir: Path, bob: Issued) -> None:
    """An EC recipient: KeyAgreeRecipientInfo, its recipientEncryptedKeys (RFC 5652 §6.2.2)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec@mss.test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path = workdir / "ec.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found = read_message(openssl("cms", "-encrypt", "-aes256", path, stdin=MESSAGE))
    assert addressed_to(found, cert) and not addressed_to(found, bob.certificate)


def test_issuer_names_compare_as_rfc_5280_says(alice: Issued, bob: Issued) -> None:
    """The issuer is matched by value (RFC 5280 §7.1), not only byte for byte: a sender may
    re-encode the Name (PrintableString, case, spaces)."""
    issuer = asn1x509.Name.build({"country_name": "FR", "organization_name": "test",
                                  "common_name": "AC  test"}, use_printable=True)
    assert issuer.dump() != bob.certificate.issuer.public_bytes()
    found = CmsSummary("enveloped_data", (RecipientId(
        issuer=issuer.dump(), serial=bob.certificate.serial_number),))
    assert addressed_to(found, bob.certificate)
    assert not addressed_to(found, alice.certificate)  # same issuer, other serial
    other = asn1x509.Name.build({"common_name": "Autre AC"}).dump()
    assert not addressed_to(CmsSummary("enveloped_data", (RecipientId(
        issuer=other, serial=bob.certificate.serial_number),)), bob.certificate)


def test_random_bytes_are_not_an_envelope() -> None:
    _refused(_pkcs7(os.urandom(600)), "illisible")
    _refused(_pkcs7(os.urandom(600), b"Content-Type: application/pkcs7-mime\r\n"), "illisible")
    _refused(HEAD + ENVELOPE_TYPE + b"\r\n", "illisible")  # empty body


def test_truncated_or_padded_der_is_refused(bob: Issued) -> None:
    der = _der(smime.encrypt(MESSAGE, [bob.certificate]))
    for cut in (len(der) - 1, len(der) // 2, 40, 2):
        _refused(_pkcs7(der[:cut]), "illisible")
    _refused(_pkcs7(der + b"\x00\x00"), "illisible")  # trailing bytes after the DER


def test_an_envelope_without_recipient_is_refused(bob: Issued) -> None:
    info = cms.ContentInfo.load(_der(smime.encrypt(MESSAGE, [bob.certificate])))
    info["content"]["recipient_infos"] = cms.RecipientInfos([])
    _refused(_pkcs7(info.dump(force=True)), "sans destinataire")


def test_the_type_must_be_the_announced_one(alice: Issued, bob: Issued) -> None:
    signature = _signature(_sign(alice))
    # A SignedData announced as an envelope, or without smime-type (read as an envelope).
    _refused(_pkcs7(signature), "autre type")
    _refused(_pkcs7(signature, b"Content-Type: application/pkcs7-mime\r\n"), "autre type")
    envelope = _der(smime.encrypt(MESSAGE, [bob.certificate]))
    opaque = b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
    _refused(_pkcs7(envelope, opaque), "autre type")
    _refused(_pkcs7(envelope, b"Content-Type: application/pkcs7-mime; smime-type=certs-only"
                              b"\r\n"), "non pris en charge")
    with pytest.raises(MalformedSmime):
        read_message(MESSAGE)  # not S/MIME at all


def test_compressed_data_is_recognised_for_the_caller_to_refuse() -> None:
    """RFC 8551 §3.6: the gateway refuses it, but it is well-formed CMS."""
    der = cms.ContentInfo({"content_type": "compressed_data", "content": cms.CompressedData({
        "version": "v0", "compression_algorithm": {"algorithm": "zlib"},
        "encap_content_info": {"content_type": "data", "content": zlib.compress(MESSAGE)},
    })}).dump()
    found = read_message(_pkcs7(der, b"Content-Type: application/pkcs7-mime; "
                                     b"smime-type=compressed-data\r\n"))
    assert found == CmsSummary("compressed_data")


# ---------------------------------------------------------------------- signatures
def test_signatures_from_certs_smime_and_openssl(workdir: Path, alice: Issued) -> None:
    assert read_message(_sign(alice)) == CmsSummary("signed_data", signers=1)
    cert, key = _files(workdir, alice)
    detached = openssl("cms", "-sign", "-signer", cert, "-inkey", key, stdin=MESSAGE)
    assert read_message(detached).signers == 1
    opaque = openssl("cms", "-sign", "-nodetach", "-signer", cert, "-inkey", key,
                     stdin=MESSAGE)
    assert b"smime-type=signed-data" in opaque
    assert read_message(opaque) == CmsSummary("signed_data", signers=1)


def test_a_garbage_signature_part_is_refused(alice: Issued) -> None:
    signed = _sign(alice)
    assert read_message(_with_signature(signed, _signature(signed))).signers == 1  # helpers
    _refused(_with_signature(signed, os.urandom(300)), "illisible")
    _refused(_with_signature(signed, b""), "illisible")
    _refused(_with_signature(signed, _signature(signed)[:-30]), "illisible")


def test_a_signature_of_another_content_is_refused(alice: Issued) -> None:
    """The second part of a multipart/signed must be the CMS of the first part."""
    signed = _sign(alice)
    _refused(signed.replace(b"resultats.", b"resultats!"), "pas celle de ce contenu")
    other = _sign(alice, MESSAGE.replace(b"Bonjour", b"Bonsoir"))
    _refused(_with_signature(signed, _signature(other)), "pas celle de ce contenu")


def test_signer_infos_are_required_and_must_carry_the_digest(workdir: Path,
                                                            alice: Issued) -> None:
    cert, key = _files(workdir, alice)
    bare = openssl("cms", "-sign", "-noattr", "-signer", cert, "-inkey", key, stdin=MESSAGE)
    _refused(bare, "sans attributs signés")
    sha1 = openssl("cms", "-sign", "-md", "sha1", "-signer", cert, "-inkey", key,
                   stdin=MESSAGE)
    _refused(sha1, "hachage")
    opaque = openssl("cms", "-sign", "-nodetach", "-outform", "DER", "-signer", cert,
                     "-inkey", key, stdin=MESSAGE)
    info = cms.ContentInfo.load(opaque)
    info["content"]["signer_infos"] = cms.SignerInfos([])
    with pytest.raises(MalformedSmime, match="sans signataire"):
        read_cms(info.dump(force=True), "signed_data")
    assert read_cms(opaque, "signed_data").signers == 1
