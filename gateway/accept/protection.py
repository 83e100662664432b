"""The security step of a submitted message: which protection, and applying it.

The submitter may ask for more than the domain policy's minimum with one header field
(DESIGN.md, "the security step chosen per message")::

    MSS-Security: sign, encrypt

Tokens ``none``, ``sign``, ``encrypt`` (``sign+encrypt`` also reads), separated by commas, spaces
or ``+``, case-insensitive; several fields add up. ``none`` alone asks for nothing beyond the
policy. Anything else is refused (``554 5.6.0``). The policy (``Settings.security_policy``)
is the minimum and wins: a request can add protection, never remove it. The field is removed
before the message is protected and relayed (``strip_request``).

Protection follows RFC 8551: sign with the sender mailbox's key, then encrypt the signed
message to every recipient's certificate (§3.7, sign then encrypt). A message the client already
signed or encrypted end to end (``end_to_end``) passes untouched.

Header fields are read with ``mailformat.headers`` (the one header parser, CONVENTIONS.md 13).
"""

from __future__ import annotations

import email.message
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certs import smime
from certs.errors import MalformedSmime, WrongPurpose
from certs.smime import PrivateKey
from certs.validation import check_purpose
from core.errors import ConfigError
from gateway.errors import (
    MailboxKeyUnreadable,
    ProtectionUnavailable,
    SecurityRequestInvalid,
    UnsignableMessage,
)
from mailformat.headers import Head, Message, same_form

REQUEST_HEADER = "MSS-Security"
_REQUEST_NAME = REQUEST_HEADER.lower()

_TOKENS = re.compile(r"[\s,+]+")
# addr-spec without quoting or comments (RFC 5322 §3.4.1), a host name as domain.
_ADDR_SPEC = re.compile(r"[^\x00-\x20\x7f@<>()\[\]\\,;:\"]+"
                        r"@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
SMIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")


@dataclass(frozen=True)
class Protection:
    """What the gateway does to a message: sign it, encrypt it, both, or neither."""

    sign: bool
    encrypt: bool

    def label(self) -> str:
        """``"none"``, ``"sign"``, ``"encrypt"`` or ``"sign+encrypt"`` (the policy words)."""
        words = [w for w, on in (("sign", self.sign), ("encrypt", self.encrypt)) if on]
        return "+".join(words) or "none"

    @classmethod
    def from_label(cls, label: str) -> Protection:
        """The protection a policy word names.

        Raises:
            ConfigError: not one of none / sign / encrypt / sign+encrypt.
        """
        word = label.strip().lower()
        if word not in ("none", "sign", "encrypt", "sign+encrypt"):
            raise ConfigError(f"Politique de sécurité inconnue : « {label} »")
        return cls(sign="sign" in word, encrypt="encrypt" in word)


# ---------------------------------------------------------------------- choosing
def requested(message: bytes | Head) -> Protection | None:
    """The protection the submitter asks for in ``MSS-Security``, or None without the field.

    Raises:
        SecurityRequestInvalid: an empty or unknown value, or ``none`` with another token.
    """
    values = Head.of(message).values(_REQUEST_NAME)
    if not values:
        return None
    tokens = {t for value in values for t in _TOKENS.split(value.lower()) if t}
    known = bool(tokens) and tokens <= {"none", "sign", "encrypt"}
    if not known or ("none" in tokens and len(tokens) > 1):
        raise SecurityRequestInvalid(
            "En-tête MSS-Security invalide : valeurs admises none, sign, encrypt "
            "(ex. « MSS-Security: sign, encrypt ») / Invalid MSS-Security header field: "
            "use none, sign and/or encrypt")
    return Protection(sign="sign" in tokens, encrypt="encrypt" in tokens)


def effective(requested: Protection | None, policy: str) -> Protection:
    """The protection applied: the policy minimum, plus what the submitter asked for.

    Raises:
        ConfigError: ``policy`` is not a policy word (Settings.validate prevents it).
    """
    minimum = Protection.from_label(policy)
    if requested is None:
        return minimum
    return Protection(sign=minimum.sign or requested.sign,
                      encrypt=minimum.encrypt or requested.encrypt)


def strip_request(message: Message) -> Message:
    """``message`` without any ``MSS-Security`` field; every other byte unchanged."""
    return same_form(message, Head.of(message).without(lambda name: name == _REQUEST_NAME))


def end_to_end(message: bytes | Head) -> bool:
    """True when the client already protected the message: S/MIME ``multipart/signed``
    (RFC 8551 §3.5.3) or any ``application/pkcs7-mime`` (enveloped, opaque-signed or
    compressed, §3.2). Such a message is relayed untouched."""
    ctype = content_type(message)
    kind = ctype.get_content_type()
    if kind == "multipart/signed":
        return str(ctype.get_param("protocol", "")).lower() in SIGNATURE_TYPES
    return kind in SMIME_TYPES


def content_type(message: bytes | Head) -> email.message.Message:
    """The message's own ``Content-Type`` parsed (the first, as ``certs.smime`` reads it;
    ``text/plain`` by default, RFC 2045 §5.2), from its header section alone: far cheaper
    than ``smime.is_signed``/``is_encrypted``, which normalise the whole message."""
    values = Head.of(message).values("content-type")
    header = email.message.Message()  # parameters are parsed only if asked for
    if values:
        header["Content-Type"] = values[0]
    return header


# ---------------------------------------------------------------------- applying
def protect(raw: bytes, protection: Protection, *,
            signer: tuple[x509.Certificate, PrivateKey] | None,
            recipients: Sequence[x509.Certificate] | Mapping[str, x509.Certificate | None],
            chain: Sequence[x509.Certificate] = ()) -> bytes:
    """``raw`` signed and/or encrypted, as ``protection`` says; unchanged for ``none``.

    ``signer``: the sender mailbox's certificate and key (``load_mailbox_key``, cached by the
    caller). ``chain``: CA certificates to ship in the signature (the issuing CA, so that a
    peer holding only our root can build the path). ``recipients``: their certificates, or a
    mapping address → certificate (None when the directory has none), which lets the refusal
    name the address. Sign first, then encrypt the signed message (RFC 8551 §3.7), so the
    signature stays inside the envelope and is checked after decryption.

    Raises:
        ProtectionUnavailable (554 5.7.5): signing asked without a key, or encryption asked
            without a usable certificate (missing, expired, not for e-mail, not RSA).
    """
    # Certificates are checked before the (costlier) signature.
    targets = _encryption_certs(recipients) if protection.encrypt else []
    if protection.sign:
        if signer is None:
            raise ProtectionUnavailable(
                "Signature demandée mais la boîte de l'expéditeur n'a pas de clé de signature "
                "S/MIME / Signing required but the sender mailbox has no S/MIME key")
        try:
            raw = smime.sign(raw, signer[0], signer[1], chain)
        except MalformedSmime as exc:  # e.g. raw 8-bit in a MIME header: cannot be signed
            raise UnsignableMessage(f"{exc.message} / Malformed MIME header, cannot sign"
                                    ) from None
    if protection.encrypt:
        raw = smime.encrypt(raw, targets)
    return raw


def _encryption_certs(recipients: Sequence[x509.Certificate]
                      | Mapping[str, x509.Certificate | None]) -> list[x509.Certificate]:
    pairs = list(recipients.items()) if isinstance(recipients, Mapping) else [
        (_label(cert), cert) for cert in recipients]
    missing = [address for address, cert in pairs if cert is None]
    if missing or not pairs:
        who = ", ".join(missing) or "aucun destinataire"
        raise ProtectionUnavailable(
            f"Chiffrement demandé mais pas de certificat de chiffrement pour {who} / "
            f"Encryption required but no encryption certificate for {who}")
    now = datetime.now(UTC)
    certs: list[x509.Certificate] = []
    for address, cert in pairs:
        assert cert is not None  # checked above
        _check_recipient(address, cert, now)
        certs.append(cert)
    return certs


def _check_recipient(address: str, cert: x509.Certificate, now: datetime) -> None:
    # Cheap checks only; the chain and revocation were checked when the directory took the
    # certificate. PKCS7EnvelopeBuilder does RSA key transport only (RFC 8551 §2.3).
    problem = None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        problem = "clé non RSA / not an RSA key"
    elif not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        problem = "certificat expiré ou pas encore valide / certificate expired or not yet valid"
    else:
        try:
            check_purpose(cert, "email")
        except WrongPurpose:
            problem = "certificat non destiné à la messagerie / not an e-mail certificate"
    if problem:
        raise ProtectionUnavailable(
            f"Certificat de chiffrement inutilisable pour {address} : {problem}")


def _label(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return san.get_values_for_type(x509.RFC822Name)[0]
    except (x509.ExtensionNotFound, IndexError):
        return cert.subject.rfc4514_string()


def load_mailbox_key(key_pem: str, secret: bytes) -> PrivateKey:
    """A mailbox's private key (``Mailbox.smime_key_pem``: PKCS#8 PEM encrypted with
    ``Settings.secret()``). About 45 ms (the key derivation is slow on purpose): the caller
    loads it once per mailbox and keeps it. Neither the key nor the secret is ever logged.

    Raises:
        MailboxKeyUnreadable (451 4.7.5): wrong secret, corrupt PEM, or not an RSA/EC key.
    """
    try:
        key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=secret)
    except (ValueError, TypeError, UnicodeEncodeError):
        # "from None": nothing of the key or the secret travels with the error.
        raise MailboxKeyUnreadable(
            "Clé privée de la boîte illisible (secret de l'opérateur ?) / "
            "Mailbox private key unreadable") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise MailboxKeyUnreadable("Type de clé privée non pris en charge / Unsupported key type")
    return key


# ---------------------------------------------------------------------- header helpers
def is_address(text: str, *, ascii_only: bool = True) -> bool:
    """True for a plain ``local@domain`` address (no display name, no white space, no
    control character): safe to write into a header field as is."""
    return bool(_ADDR_SPEC.fullmatch(text)) and (text.isascii() or not ascii_only)
