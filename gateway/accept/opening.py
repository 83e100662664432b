"""What happens to a message before it lands in a mailbox: open it, check it, say so.

``open_message`` decrypts an S/MIME envelope with the recipient mailbox's key and verifies the
signature inside (RFC 8551), its chain and revocation (``certs.validation``), and that the
signer is the sender: the ``From`` address must be one of the signer certificate's addresses.
(RFC 8550 §3 also accepts ``Sender``; a reader sees ``From``, so only ``From`` vouches here.)
The signed structure is kept, so a client can verify again against ``DATA_DIR/pki/ca.pem``.

``stamp`` records the verdict where the reader sees it, in one ``Authentication-Results``
field (RFC 8601) with the ``smime`` method (RFC 7281), prepended above every other field::

    Authentication-Results: mss.test;
     smime=pass (encrypted) reason="signature verifiee"
     body.smime-identity=alice@mss.test

- the result is ``pass``, ``fail``, ``none`` (not signed, or not opened here) or
  ``temperror``;
- the comment right after the result is the hop fact: ``(encrypted)`` when the message arrived
  S/MIME-encrypted, ``(not encrypted)`` otherwise;
- ``reason`` is a short French text folded to ASCII; ``body.smime-identity`` the signer's
  address (or subject), when known.

Every value is made 7-bit and quoted so that nothing from a certificate can break the field.
Before adding it, ``stamp`` removes every ``Authentication-Results`` field that claims our
authserv-id (RFC 8601 §5), wherever it came from, inner MIME headers of a decrypted envelope
included. A reader trusts only the first field with our authserv-id.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from certs import smime
from certs._x509util import email_addresses
from certs.errors import CertError, DecryptionFailed
from certs.smime import PrivateKey
from certs.validation import TrustStore, ValidationCache, validate
from gateway.accept.protection import SIGNATURE_TYPES, SMIME_TYPES, content_type, is_address
from gateway.errors import ascii_text
from mailformat.authresults import authserv_id_of, normal_id
from mailformat.headers import Head, Message, field_value, raw_of, same_form

AUTH_RESULTS = "Authentication-Results"
RESULTS = ("pass", "fail", "none", "temperror")
MAX_VALUE = 200  # characters of a reason or identity in the field (RFC 5322 §2.1.1 lines)

_TOKEN = re.compile(r'[^\s;()"\\]+')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")

# Short French reasons per certs error code: no content, no certificate data.
_REASONS = {
    "bad_signature": "signature invalide : message modifié depuis sa signature",
    "untrusted": "signataire hors de l'espace de confiance (autorité inconnue)",
    "expired": "certificat du signataire expiré ou pas encore valide",
    "revoked": "certificat du signataire révoqué",
    "wrong_purpose": "certificat du signataire non destiné à la messagerie",
    "malformed_smime": "structure S/MIME illisible",
    "decrypt_failed": "déchiffrement impossible : message chiffré pour un autre certificat",
    "from_mismatch": "signature valide, mais d'un autre que l'expéditeur (From)",
    "no_from": "expéditeur (From) absent, multiple ou illisible",
}


@dataclass(frozen=True)
class Verdict:
    """The S/MIME outcome for one delivered message (RFC 7281 results)."""

    result: str  # "pass" | "fail" | "none" | "temperror"
    signer: str | None  # signer address (rfc822Name) or subject
    encrypted: bool  # the message arrived S/MIME-encrypted
    reason: str  # short, French; no content
    error_code: str | None  # certs error code when fail; "no_key" for an unopened envelope


def strip_forged(message: Message, authserv_id: str) -> Message:
    """``message`` without any ``Authentication-Results`` field whose authserv-id is ours
    (case-insensitive, a trailing dot ignored): RFC 8601 §5 says we MUST remove them. Fields
    of other services stay; every other byte is unchanged."""
    ours = normal_id(authserv_id)
    kept = Head.of(message).without(
        lambda name: name == "authentication-results",
        keep_field=lambda f: normal_id(authserv_id_of(field_value(f))) != ours)
    return same_form(message, kept)


# ---------------------------------------------------------------------- opening
def open_message(raw: Message, *, key: tuple[x509.Certificate, PrivateKey] | None,
                 store: TrustStore, at: datetime | None = None) -> tuple[Message, Verdict]:
    """Decrypt (if enveloped) and verify (if signed) ``raw`` for delivery.

    Returns the message to deliver and the verdict. Decrypted, the message is the outer
    header fields and the opened content, its signature kept; if it cannot be opened, it is
    returned as it came. Without ``key`` an envelope is left closed for the recipient's own
    client: result ``none``, ``error_code="no_key"``. A failure is a verdict ``fail``, never
    an exception: the caller refuses or quarantines, and never delivers it as verified.
    The message comes back in the form it was given (bytes, or a Head).
    """
    encrypted = _smime_type(raw) in ("enveloped-data", "")
    message = raw
    if encrypted:
        if key is None:
            return raw, Verdict("none", None, True, "message chiffré pour le destinataire, "
                                "non déchiffré par l'opérateur", "no_key")
        try:
            message = same_form(raw, _decrypt(raw_of(raw), key))
        except CertError as exc:
            return raw, _failed(exc.code, encrypted)
    if not _is_signed(message):
        return message, Verdict("none", None, encrypted, "message non signé", None)
    try:
        verified = smime.verify(raw_of(message), store, at=at)
    except CertError as exc:
        return message, _failed(exc.code, encrypted)
    return message, _bind_to_sender(message, verified.addresses, verified.subject, encrypted)


def own_signature(message: bytes | Head, signer: x509.Certificate, store: TrustStore, *,
                  chain: Sequence[x509.Certificate] = (),
                  checks: ValidationCache | None = None) -> Verdict:
    """The verdict for a message this operator has just signed with ``signer``'s key, without
    verifying the signature it made itself (``KeyRing`` checked that key and certificate
    match): the signer certificate is validated now (chain, expiry, revocation, purpose;
    ``checks`` may remember a recent success) and bound to the ``From`` like any signer."""
    try:
        if checks is not None:
            checks.validate(signer, store, purpose="email", intermediates=chain)
        else:
            validate(signer, store, purpose="email", intermediates=chain)
    except CertError as exc:
        return _failed(exc.code, False)
    return _bind_to_sender(message, email_addresses(signer), signer.subject.rfc4514_string(),
                           False)


def _smime_type(raw: bytes | Head) -> str | None:
    """``smime-type`` of an application/pkcs7-mime message ("" if absent: most often an
    envelope, RFC 8551 §3.2.2, as ``certs.smime`` reads it), None for anything else."""
    ctype = content_type(raw)
    if ctype.get_content_type() not in SMIME_TYPES:
        return None
    return str(ctype.get_param("smime-type", "")).lower()


def _is_signed(message: bytes | Head) -> bool:
    """``smime.is_signed`` from the header section only."""
    ctype = content_type(message)
    if ctype.get_content_type() == "multipart/signed":
        return str(ctype.get_param("protocol", "")).lower() in SIGNATURE_TYPES
    return _smime_type(message) == "signed-data"


def _decrypt(raw: bytes, key: tuple[x509.Certificate, PrivateKey]) -> bytes:
    cert, private = key
    if not isinstance(private, rsa.RSAPrivateKey):  # RSA key transport only (RFC 8551 §2.3)
        raise DecryptionFailed("Clé de déchiffrement non RSA.")
    return smime.decrypt(raw, cert, private)


def _failed(code: str, encrypted: bool, signer: str | None = None) -> Verdict:
    reason = _REASONS.get(code, "vérification S/MIME en échec")
    return Verdict("fail", signer, encrypted, reason, code)


def _bind_to_sender(message: bytes | Head, addresses: list[str], subject: str,
                    encrypted: bool) -> Verdict:
    """``pass`` only if every ``From`` address is one of the signer's (RFC 8550 §3)."""
    signer_addresses = {a.lower() for a in addresses}
    senders = _from_addresses(message)
    signer = addresses[0] if addresses else subject
    if not senders:
        return _failed("no_from", encrypted, signer)
    if not set(senders) <= signer_addresses:
        return _failed("from_mismatch", encrypted, signer)
    return Verdict("pass", senders[0], encrypted, "signature vérifiée", None)


def _from_addresses(message: bytes | Head) -> list[str]:
    """The addresses of the one ``From`` field, lower case; empty if absent, repeated or
    unreadable (RFC 5322 §3.6: exactly one From)."""
    values = Head.of(message).values("from")
    if len(values) != 1:
        return []
    # Every parsed address must be the signer's: an ambiguous value that parses into more
    # addresses than a reader may see (CVE-2023-27043) cannot pass.
    pairs = email.utils.getaddresses(values)
    addresses = [address.lower() for _, address in pairs]
    return addresses if all(is_address(a) for a in addresses) else []


# ---------------------------------------------------------------------- stamping
def stamp(raw: Message, verdict: Verdict, authserv_id: str) -> Message:
    """``raw`` with forged results removed (``strip_forged``) and our
    ``Authentication-Results`` field prepended (format in the module docstring).

    Raises:
        ValueError: ``authserv_id`` is not a domain name, or an unknown result.
    """
    if not _DOMAIN.fullmatch(authserv_id) or verdict.result not in RESULTS:
        raise ValueError("authserv-id ou résultat invalide")
    data = raw_of(raw)
    first = data.find(b"\n")  # the field takes the message's line ends
    eol = b"\n" if first > 0 and data[first - 1:first] != b"\r" else b"\r\n"
    lines = [f"{AUTH_RESULTS}: {authserv_id};",
             f" smime={verdict.result} ({'encrypted' if verdict.encrypted else 'not encrypted'})"
             f" reason={_quoted(verdict.reason)}"]
    if verdict.signer:
        lines.append(f" body.smime-identity={_identity(verdict.signer)}")
    field = eol.join(line.encode("ascii") for line in lines) + eol
    return same_form(raw, strip_forged(Head.of(raw), authserv_id).prepended(field))


def _identity(signer: str) -> str:
    """An address as is when it is a plain ASCII addr-spec, else a quoted-string."""
    return signer if is_address(signer) and len(signer) <= MAX_VALUE else _quoted(signer)


def _quoted(text: str) -> str:
    """A quoted-string (RFC 5322 §3.2.4) of ``text`` made one-line ASCII, clipped."""
    safe = ascii_text(text)[:MAX_VALUE]
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'
