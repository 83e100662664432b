"""S/MIME 4.0 (RFC 8551) over whole RFC 5322 messages: sign, verify, encrypt, decrypt.

The CMS structures come from cryptography's PKCS7 builders in DER (their ``SMIME`` output
re-parses the message and costs about four times more); the MIME wrappers are written here.
cryptography cannot verify a SignedData, so ``verify`` checks it with asn1crypto (RFC 5652
§5.4 and §5.6) and then validates the signer's certificate with ``certs.validation``.

Messages come in as bytes with CRLF or LF line ends and go out with CRLF. The outer header
fields (From, To, Subject, Date, Message-ID, X-MSS-…) are kept in the clear as they are; the
``Content-*`` fields and the body form the protected inner entity (RFC 8551 §3.1).
"""

from __future__ import annotations

import base64
import binascii
import email.message
import email.parser
import email.policy
import io
import quopri
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.generator import BytesGenerator
from functools import cached_property

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from certs._x509util import check_signed_data, email_addresses
from certs.errors import DecryptionFailed, MalformedSmime, NotSigned
from certs.validation import TrustStore, validate

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_SIG_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_MIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that verified, by a signer whose certificate validated."""

    signer: x509.Certificate
    addresses: list[str]  # rfc822Name SANs of the signer
    subject: str  # RFC 4514
    signing_time: datetime | None
    content: bytes  # the signed inner MIME entity, as bytes


def sign(message: bytes, cert: x509.Certificate, key: PrivateKey,
         chain: Sequence[x509.Certificate] = ()) -> bytes:
    """Wrap ``message`` as multipart/signed with a detached SHA-256 CMS signature (RFC 8551
    §3.5.3). ``chain``: CA certificates to include beside the signer's (the root may be left
    out). The signed entity is made 7-bit first: its bytes must survive any transport."""
    msg = _split_message(message)
    inner = _make_7bit(_inner_entity(msg))
    builder = pkcs7.PKCS7SignatureBuilder().set_data(inner)
    builder = builder.add_signer(cert, key, hashes.SHA256())
    for ca in chain:
        builder = builder.add_certificate(ca)
    # Binary: ``inner`` is already canonical (CRLF); signedAttributes include signingTime and
    # SMIMECapabilities (RFC 8551 §2.5).
    der = builder.sign(serialization.Encoding.DER,
                       [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
    boundary = _boundary(inner)
    return b"".join((
        msg.outer_headers(),
        b"MIME-Version: 1.0\r\n",
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n',
        b' micalg=sha-256; boundary="', boundary, b'"\r\n\r\n',
        b"This is an S/MIME signed message\r\n\r\n",
        b"--", boundary, b"\r\n", inner, b"\r\n--", boundary, b"\r\n",
        b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\n",
        _base64(der), b"--", boundary, b"--\r\n",
    ))


def encrypt(message: bytes, recipients: Sequence[x509.Certificate]) -> bytes:
    """Envelope the inner entity of ``message`` for each recipient (RFC 8551 §3.3):
    AES-256-CBC content encryption, RSA (PKCS #1 v1.5) key transport."""
    if not recipients:
        raise ValueError("au moins un destinataire est nécessaire")
    msg = _split_message(message)
    builder = (pkcs7.PKCS7EnvelopeBuilder().set_data(_inner_entity(msg))
               .set_content_encryption_algorithm(algorithms.AES256))
    for cert in recipients:
        builder = builder.add_recipient(cert)
    der = builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    return b"".join((
        msg.outer_headers(),
        b"MIME-Version: 1.0\r\n",
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Disposition: attachment; filename=smime.p7m\r\n\r\n",
        _base64(der),
    ))


def decrypt(message: bytes, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bytes:
    """The message with its enveloped content opened: outer header fields + the inner entity.

    Raises:
        MalformedSmime: not an S/MIME enveloped message, or an unreadable one.
        DecryptionFailed: not addressed to ``cert``, or ``key`` does not open it.
    """
    msg = _split_message(message)
    if not _is_enveloped(msg):
        raise MalformedSmime("Ce message n'est pas chiffré (S/MIME enveloped-data attendu).")
    der = _decode_body(msg)
    _expect_content_type(der, "enveloped_data")
    try:
        inner = pkcs7.pkcs7_decrypt_der(der, cert, key, [])
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DecryptionFailed(
            "Impossible de déchiffrer ce message : il n'est pas chiffré pour ce certificat, "
            "ou la clé ne correspond pas."
        ) from exc
    inner = inner.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return msg.outer_headers() + b"MIME-Version: 1.0\r\n" + inner


def verify(message: bytes, store: TrustStore, *, at: datetime | None = None
           ) -> VerifiedSignature:
    """Check the S/MIME signature of ``message`` and validate its signer for e-mail.

    The certificate is validated at ``at``, by default now, and not at the signingTime the
    signer asserts (a signer could backdate it past the expiry of its certificate).

    Raises:
        NotSigned: not an S/MIME signed message.
        MalformedSmime: the signature cannot be read.
        SignatureInvalid: content changed since it was signed, or a bad signature.
        UntrustedCertificate, CertificateExpired, CertificateRevoked, WrongPurpose:
            from ``certs.validation.validate``.
    """
    msg = _split_message(message)
    ctype = msg.content_type
    if ctype.get_content_type() == "multipart/signed":
        content, der = _detached_parts(msg)
    elif _is_opaque_signed(msg):
        content, der = None, _decode_body(msg)
    else:
        raise NotSigned("Ce message n'est pas signé (S/MIME).")
    _expect_content_type(der, "signed_data")
    checked = check_signed_data(der, content)
    validate(checked.signer, store, purpose="email", at=at, intermediates=checked.certificates)
    return VerifiedSignature(
        signer=checked.signer, addresses=email_addresses(checked.signer),
        subject=checked.signer.subject.rfc4514_string(),
        signing_time=checked.signing_time, content=checked.content,
    )


def is_signed(message: bytes) -> bool:
    """True for multipart/signed S/MIME and for opaque signed-data."""
    msg = _split_message(message)
    ctype = msg.content_type
    if ctype.get_content_type() == "multipart/signed":
        return str(ctype.get_param("protocol", "")).lower() in _SIG_TYPES
    return _is_opaque_signed(msg)


def is_encrypted(message: bytes) -> bool:
    """True for S/MIME enveloped-data."""
    return _is_enveloped(_split_message(message))


def _smime_type(msg: _Entity) -> str | None:
    ctype = msg.content_type
    if ctype.get_content_type() not in _MIME_TYPES:
        return None
    return str(ctype.get_param("smime-type", "")).lower()


def _is_enveloped(msg: _Entity) -> bool:
    # smime-type is optional in old senders; an application/pkcs7-mime part without it is
    # most often an envelope (RFC 8551 §3.2.2).
    return _smime_type(msg) in ("enveloped-data", "")


def _is_opaque_signed(msg: _Entity) -> bool:
    return _smime_type(msg) == "signed-data"


def _detached_parts(msg: _Entity) -> tuple[bytes, bytes]:
    ctype = msg.content_type
    if str(ctype.get_param("protocol", "")).lower() not in _SIG_TYPES:
        raise NotSigned("Ce message est signé, mais pas en S/MIME.")
    boundary = ctype.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MalformedSmime("Message signé sans délimiteur MIME (boundary).")
    parts = _split_multipart(msg.body, boundary.encode("ascii", "replace"))
    if len(parts) != 2:
        raise MalformedSmime("Un message multipart/signed doit avoir exactement deux parties.")
    sig = _split_message(parts[1])
    if sig.content_type.get_content_type() not in _SIG_TYPES:
        raise MalformedSmime("Seconde partie du message signé : signature S/MIME attendue.")
    return parts[0], _decode_body(sig)


def _expect_content_type(der: bytes, expected: str) -> None:
    try:
        found = cms.ContentInfo.load(der)["content_type"].native
    except (ValueError, TypeError) as exc:
        raise MalformedSmime("Structure CMS illisible.") from exc
    if found != expected:
        raise MalformedSmime(f"Structure CMS inattendue ({found}, {expected} attendu).")


def _boundary(inner: bytes) -> bytes:
    while True:  # RFC 2046 §5.1.1: the boundary must not occur in the encapsulated part
        boundary = b"----=_mss_" + secrets.token_hex(16).encode()
        if boundary not in inner:
            return boundary


def _base64(der: bytes) -> bytes:
    """Base64 in 76-character CRLF lines (RFC 2045 §6.8)."""
    text = base64.b64encode(der)
    return b"\r\n".join([text[i:i + 76] for i in range(0, len(text), 76)]) + b"\r\n"


# ---------------------------------------------------------------------- MIME plumbing
# Done on raw bytes: a signature covers exact bytes, which a parse/re-serialise round trip
# through the email package would not preserve.

MAX_LINE = 998  # RFC 5322 §2.1.1, without the CRLF
_SMTP = email.policy.SMTP.clone(cte_type="7bit")  # CRLF line ends; 8-bit headers encoded


@dataclass(frozen=True)
class _Entity:
    """A message or MIME part: its raw header fields (each with its folded lines and CRLF)
    and its body, both in canonical CRLF form."""

    fields: tuple[bytes, ...]
    body: bytes

    def outer_headers(self) -> bytes:
        """Every field but Content-* and MIME-Version: what stays in the clear."""
        return b"".join(f for f in self.fields if not _is_mime_field(f))

    @cached_property
    def content_fields(self) -> tuple[bytes, ...]:
        return tuple(f for f in self.fields if _field_name(f).startswith(b"content-"))

    @cached_property
    def content_type(self) -> email.message.Message:
        """The Content-* fields parsed (RFC 2045 parameters, defaults to text/plain)."""
        return email.parser.BytesHeaderParser().parsebytes(b"".join(self.content_fields))


def _field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def _is_mime_field(field: bytes) -> bool:
    name = _field_name(field)
    return name.startswith(b"content-") or name == b"mime-version"


def _split_message(message: bytes) -> _Entity:
    """Header fields and body of an RFC 5322 message or MIME entity, line ends made CRLF."""
    data = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data.startswith(b"\r\n"):
        head, body = b"", data[2:]
    else:
        end = data.find(b"\r\n\r\n")
        head, body = (data, b"") if end < 0 else (data[: end + 2], data[end + 4:])
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:  # RFC 5322 §2.2.3 folding
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return _Entity(tuple(fields), body)


def _inner_entity(msg: _Entity) -> bytes:
    """The MIME entity S/MIME protects: the Content-* fields and the body (RFC 8551 §3.1)."""
    fields = b"".join(msg.content_fields)
    if not fields:  # RFC 2045 §5.2 default, with the charset an 8-bit body most likely has
        charset = b"us-ascii" if msg.body.isascii() else b"utf-8"
        fields = b"Content-Type: text/plain; charset=" + charset + b"\r\n"
    return fields + b"\r\n" + msg.body


def _is_7bit(data: bytes) -> bool:
    # (a regex for long lines is far slower on a 25 MB message than this split)
    return (data.isascii() and b"\0" not in data
            and max(map(len, data.split(b"\n")), default=0) <= MAX_LINE + 1)


def _make_7bit(entity: bytes) -> bytes:
    """``entity`` unchanged if 7-bit clean, else re-encoded part by part (quoted-printable
    for text, base64 otherwise) so that a signature survives 8-bit-unsafe hops
    (RFC 8551 §3.1.2)."""
    if _is_7bit(entity):
        return entity
    try:
        return _reencode(entity)
    except (UnicodeError, ValueError, LookupError) as exc:
        # A header the email package cannot re-serialise (raw 8-bit in a structured MIME
        # field, stray control characters): refuse clearly rather than fail deep inside.
        raise MalformedSmime("En-tête MIME invalide (caractères non ASCII ou de contrôle) : "
                             "le message ne peut pas être signé.") from exc


def _reencode(entity: bytes) -> bytes:
    tree = email.message_from_bytes(entity, policy=_SMTP)
    for part in tree.walk():
        _decode_8bit_headers(part)
        cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        if part.is_multipart():  # RFC 2045 §6.4: a container is 7bit, 8bit or binary only
            if cte in ("8bit", "binary"):
                part.replace_header("Content-Transfer-Encoding", "7bit")
        elif cte not in ("base64", "quoted-printable"):
            _encode_leaf(part)
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_SMTP).flatten(tree)
    return out.getvalue()


def _decode_8bit_headers(part: email.message.Message) -> None:
    # Raw UTF-8 in a part's header (RFC 6532, legal only with SMTPUTF8): set it again as
    # text so that the generator writes it RFC 2047/2231-encoded, in UTF-8.
    for name, raw in list(part.raw_items()):
        if not raw.isascii():
            part.replace_header(name, str(part[name]))


def _encode_leaf(part: email.message.Message) -> None:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes) or _is_7bit(raw):
        return
    del part["Content-Transfer-Encoding"]
    if part.get_content_maintype() == "text":
        encoded = quopri.encodestring(raw.replace(b"\r\n", b"\n"))
        part["Content-Transfer-Encoding"] = "quoted-printable"
    else:
        encoded = base64.encodebytes(raw)
        part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(encoded.decode("ascii"))


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """The raw body parts of a multipart body (RFC 2046 §5.1.1). The CRLF before each
    delimiter belongs to the delimiter, not to the part: a part is exactly what was signed."""
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary)
    parts: list[bytes] = []
    for piece in pieces[1:]:  # pieces[0] is the preamble
        if piece.startswith(b"--"):
            return parts
        eol = piece.find(b"\r\n")
        if eol < 0 or piece[:eol].strip(b" \t"):
            raise MalformedSmime("Délimiteur MIME invalide dans le message signé.")
        parts.append(piece[eol + 2:])
    raise MalformedSmime("Message multipart tronqué (délimiteur de fin absent).")


def _decode_body(entity: _Entity) -> bytes:
    """The body of an S/MIME part with its Content-Transfer-Encoding removed."""
    cte = str(entity.content_type.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if cte != "base64":
        return entity.body
    try:
        return base64.b64decode(entity.body)
    except (binascii.Error, ValueError) as exc:
        raise MalformedSmime("Contenu S/MIME : base64 invalide.") from exc
