"""Attacks with fake end-to-end protection (issue #14 item 8), through the real gateway.

A message the client protected itself is relayed untouched, so a local user could dress any
bytes as S/MIME: random bytes as ``application/pkcs7-mime`` passed *unsigned* under the
``sign`` policy and showed "Reçu chiffré" to the reader; a ``multipart/signed`` with a garbage
signature passed as signed. The gateway now checks the CMS (``certs.cms_check``) at the end of
DATA and refuses with ``554 5.7.5``; a real envelope addressed to the recipient's certificate
(``openssl cms -encrypt``, an independent implementation) and a real client signature still
pass. Each attack is sent by marie over STARTTLS with smtplib, and nothing is queued.
"""

from __future__ import annotations

import base64
import os
import smtplib
import subprocess
import uuid
import zlib
from email import message_from_bytes
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from certs import smime
from certs.smime import PrivateKey
from gateway.accept.protection import load_mailbox_key
from spool.models import QueuedMessage
from trust_space.models import Mailbox

if TYPE_CHECKING:
    from tests.gateway_fixtures import Operator

pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures"]
PASSWORD = "Demo-Passw0rd"  # tests.mailstore_fixtures.PASSWORD
MARIE, PAUL, JULIE = "marie.martin@mss.test", "paul.durand@mss.test", "julie.bernard@mss.test"
INNER = (b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
         b"Compte rendu de Mme Durand : resultats normaux.\r\n")
ENVELOPE = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"


def _head(subject: str, to: str = PAUL) -> tuple[bytes, str]:
    """Outer header fields from marie, and the Message-ID (the queue's de-duplication key)."""
    key = f"<{uuid.uuid4().hex}@mss.test>"
    return (f"From: {MARIE}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {key}\r\n"
            "MIME-Version: 1.0\r\n").encode(), key


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _send(op: Operator, recipients: list[str], message: bytes) -> tuple[int, bytes]:
    """marie submits over STARTTLS: the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", op.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=op.client_context())
        smtp.login(MARIE, PASSWORD)
        assert smtp.mail(MARIE)[0] == 250
        for rcpt in recipients:
            assert smtp.rcpt(rcpt)[0] == 250
        return smtp.data(message)


def _queued(op: Operator, key: str) -> bool:
    with op.space.db.transaction() as session:
        return session.scalar(select(QueuedMessage.id)
                              .where(QueuedMessage.message_key == key)) is not None


def _refused(op: Operator, recipients: list[str], message: bytes, key: str) -> str:
    code, text = _send(op, recipients, message)
    assert (code, text[:6]) == (554, b"5.7.5 "), text
    assert b"Durand" not in text and b"resultats" not in text  # never the content
    assert not _queued(op, key)
    return text.decode()


def _certificate(op: Operator, address: str) -> x509.Certificate:
    with op.space.db.transaction() as session:
        pem = session.scalar(select(Mailbox.smime_cert_pem).where(Mailbox.address == address))
    assert pem
    return x509.load_pem_x509_certificate(pem.encode())


def _key(op: Operator, address: str) -> PrivateKey:
    with op.space.db.transaction() as session:
        pem = session.scalar(select(Mailbox.smime_key_pem).where(Mailbox.address == address))
    assert pem
    return load_mailbox_key(pem, op.settings.secret())


def _openssl_envelope(op: Operator, tmp_path: Path, head: bytes, to: str) -> bytes:
    """``head`` + an envelope made by ``openssl cms -encrypt`` to ``to``'s certificate."""
    cert = tmp_path / "recipient.pem"
    cert.write_bytes(_certificate(op, to).public_bytes(Encoding.PEM))
    sealed = subprocess.run(["openssl", "cms", "-encrypt", "-aes256", str(cert)], input=INNER,
                            capture_output=True, check=True).stdout
    mime = b"".join(line for line in _crlf(sealed).splitlines(keepends=True)
                    if not line.lower().startswith(b"mime-version"))
    return head + mime


def _signed_by_marie(op: Operator, head: bytes, inner: bytes = INNER) -> bytes:
    return smime.sign(head + inner, _certificate(op, MARIE), _key(op, MARIE))


def _signature_part(signed: bytes, der: bytes) -> bytes:
    """``signed`` (certs.smime's multipart/signed) with ``der`` as its signature part."""
    top, rest = signed.split(b"filename=smime.p7s\r\n\r\n", 1)
    return (top + b"filename=smime.p7s\r\n\r\n"
            + base64.encodebytes(der).replace(b"\n", b"\r\n") + rest[rest.index(b"--"):])


def _signature_of(signed: bytes) -> bytes:
    rest = signed.split(b"filename=smime.p7s\r\n\r\n", 1)[1]
    return base64.b64decode(rest[:rest.index(b"--")])


# ---------------------------------------------------------------------- fakes
@pytest.mark.parametrize("content_type", [
    ENVELOPE,
    b"Content-Type: application/pkcs7-mime\r\n",  # no smime-type: read as an envelope
    b"Content-Type: application/x-pkcs7-mime; smime-type=signed-data\r\n",
    b"Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\n",
], ids=["enveloped", "no-smime-type", "opaque-signed", "compressed"])
def test_random_bytes_dressed_as_s_mime_are_refused(operator: Operator,
                                                    content_type: bytes) -> None:
    head, key = _head("Faux chiffre")
    body = base64.encodebytes(os.urandom(1500)).replace(b"\n", b"\r\n")
    text = _refused(operator, [PAUL], head + content_type
                    + b"Content-Transfer-Encoding: base64\r\n\r\n" + body, key)
    assert "S/MIME" in text


def test_multipart_signed_with_a_garbage_signature_is_refused(operator: Operator) -> None:
    head, key = _head("Fausse signature")
    signed = _signed_by_marie(operator, head)
    _refused(operator, [PAUL], _signature_part(signed, os.urandom(400)), key)


def test_a_real_signature_of_another_message_is_refused(operator: Operator) -> None:
    """marie's genuine signature, lifted from another message: not the CMS of this part
    (RFC 8551 §3.1: it covers the inner entity, here another text)."""
    head, key = _head("Signature deplacee")
    other = _signed_by_marie(operator, head, INNER.replace(b"normaux", b"a revoir"))
    _refused(operator, [PAUL],
             _signature_part(_signed_by_marie(operator, head), _signature_of(other)), key)


def test_compressed_data_is_refused(operator: Operator) -> None:
    """Well-formed, but RFC 8551 §3.6 compression is rarely used: refused outright."""
    head, key = _head("Compresse")
    der = cms.ContentInfo({"content_type": "compressed_data", "content": cms.CompressedData({
        "version": "v0", "compression_algorithm": {"algorithm": "zlib"},
        "encap_content_info": {"content_type": "data", "content": zlib.compress(INNER)},
    })}).dump()
    text = _refused(operator, [PAUL], head + b"Content-Type: application/pkcs7-mime; "
                    b"smime-type=compressed-data\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                    + base64.encodebytes(der).replace(b"\n", b"\r\n"), key)
    assert "compressed-data" in text


# ---------------------------------------------------------------------- envelopes
def test_an_envelope_to_the_recipient_is_relayed_untouched(operator: Operator,
                                                           tmp_path: Path) -> None:
    head, key = _head("Chiffre pour Paul")
    code, text = _send(operator, [PAUL], _openssl_envelope(operator, tmp_path, head, PAUL))
    assert code == 250, text
    raw = operator.wait_for(PAUL, lambda r: message_from_bytes(r)["Message-ID"] == key)
    assert message_from_bytes(raw).get_content_type() == "application/pkcs7-mime"
    paul = _key(operator, PAUL)
    assert isinstance(paul, rsa.RSAPrivateKey)
    assert b"resultats normaux" in smime.decrypt(raw, _certificate(operator, PAUL), paul)


def test_an_envelope_to_another_mailbox_is_refused(operator: Operator, tmp_path: Path) -> None:
    """Encrypted to julie's certificate, sent to paul: paul could never read it."""
    head, key = _head("Chiffre pour Julie")
    text = _refused(operator, [PAUL], _openssl_envelope(operator, tmp_path, head, JULIE), key)
    assert PAUL in text and JULIE not in text


def test_an_envelope_must_reach_every_recipient(operator: Operator) -> None:
    head, key = _head("Chiffre pour Paul seul", to=f"{PAUL}, {JULIE}")
    sealed = smime.encrypt(head + INNER, [_certificate(operator, PAUL)])
    text = _refused(operator, [PAUL, JULIE], sealed, key)
    assert JULIE in text and PAUL not in text
    both = smime.encrypt(head + INNER, [_certificate(operator, PAUL),
                                        _certificate(operator, JULIE)])
    assert _send(operator, [PAUL, JULIE], both)[0] == 250


def test_a_recipient_without_certificate_cannot_get_an_envelope(operator: Operator) -> None:
    head, key = _head("Sans certificat", to=JULIE)
    sealed = smime.encrypt(head + INNER, [_certificate(operator, JULIE)])
    gw = operator.gateway.gw
    assert gw is not None
    with operator.space.db.transaction() as session:
        box = session.scalar(select(Mailbox).where(Mailbox.address == JULIE))
        assert box is not None
        saved, box.smime_cert_pem = box.smime_cert_pem, None
    gw.decisions.clear()  # routes are cached a few seconds (policy_cache_seconds)
    try:
        text = _refused(operator, [JULIE], sealed, key)
        assert JULIE in text and "certificat" in text
    finally:
        with operator.space.db.transaction() as session:
            box = session.scalar(select(Mailbox).where(Mailbox.address == JULIE))
            box.smime_cert_pem = saved  # type: ignore[union-attr]
        gw.decisions.clear()


# ---------------------------------------------------------------------- real signatures
def test_marie_s_own_signature_is_relayed_and_verifies(operator: Operator) -> None:
    head, key = _head("Signe par Marie")
    code, text = _send(operator, [PAUL], _signed_by_marie(operator, head))
    assert code == 250, text
    raw = operator.wait_for(PAUL, lambda r: message_from_bytes(r)["Message-ID"] == key)
    received = message_from_bytes(raw)
    assert received.get_content_type() == "multipart/signed"
    assert "smime=pass" in str(received["Authentication-Results"])
