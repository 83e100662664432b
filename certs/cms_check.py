"""Is an S/MIME message's CMS what its MIME type says? A structural check, without keys.

A client may protect a message end to end itself (RFC 8551); the gateway relays it untouched,
so it must first know that the protection is real (issue #14 item 8): an
``application/pkcs7-mime`` body of random bytes is not an envelope, a ``multipart/signed``
whose second part is garbage is not a signature. ``read_message`` finds the CMS where the
readers (``certs.smime``) look for it, parses its DER once (asn1crypto, RFC 5652) and says
what it holds, as plain data:

- an envelope (``enveloped-data``, or ``authEnveloped-data`` RFC 5083): who it is addressed
  to, one ``RecipientId`` per key transport or key agreement recipient (RFC 5652 §6.2.1,
  §6.2.2); ``addressed_to`` tells whether a certificate is one of them;
- a signature (``signed-data``, opaque or detached): how many SignerInfos, each of which must
  be *of this content*: its ``message-digest`` signed attribute (RFC 5652 §5.4, §11.2) is the
  digest of the encapsulated content, or of the first part of a ``multipart/signed``
  (RFC 8551 §3.5.3). Only the digest is compared: the signature value and the signer's
  certificate are the reader's to check (``certs.smime.verify``);
- ``compressed-data`` (RFC 8551 §3.6) is recognised, and left to the caller to refuse.

Nothing here decrypts or verifies; nothing of the content travels in an error text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1x509
from cryptography import x509

from certs.errors import MalformedSmime, NotSigned
from certs.smime import _decode_body, _detached_parts, _split_message

ENVELOPES = ("enveloped_data", "authenticated_enveloped_data")

# smime-type (RFC 8551 §3.2.2) → the CMS content type it announces. Without the parameter,
# certs.smime (the reader) takes the body for an envelope, so the checker does too.
_EXPECTED = {
    "": "enveloped_data",
    "enveloped-data": "enveloped_data",
    "authenveloped-data": "authenticated_enveloped_data",
    "signed-data": "signed_data",
    "compressed-data": "compressed_data",
}
_MIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
# The digests certs._x509util accepts: SHA-1 and MD5 fail there (RFC 8551 §2.1), so here too.
_DIGESTS = ("sha224", "sha256", "sha384", "sha512")


@dataclass(frozen=True)
class RecipientId:
    """The certificate a RecipientInfo wraps the content key for (RFC 5652 §6.2): named by
    its issuer (DER of the Name) and serial number, or by its subject key identifier."""

    issuer: bytes | None = None
    serial: int | None = None
    key_id: bytes | None = None


@dataclass(frozen=True)
class CmsSummary:
    """What an S/MIME message's CMS holds (see the module docstring)."""

    content_type: str  # asn1crypto's name: "enveloped_data", "signed_data", …
    recipients: tuple[RecipientId, ...] = ()
    other_recipients: int = 0  # KEK, password or other RecipientInfos: no certificate
    signers: int = 0

    @property
    def enveloped(self) -> bool:
        return self.content_type in ENVELOPES


def read_message(message: bytes) -> CmsSummary:
    """The CMS of an S/MIME message (``application/pkcs7-mime`` or ``multipart/signed``),
    checked against what its ``Content-Type`` announces.

    Raises:
        MalformedSmime: not S/MIME, an unknown ``smime-type``, a body that is not DER CMS
            of the announced type, an envelope without recipient or content, a signature
            without SignerInfo or whose digest is not that of the content.
    """
    msg = _split_message(message)
    ctype = msg.content_type
    if ctype.get_content_type() == "multipart/signed":
        try:
            content, der = _detached_parts(msg)
        except NotSigned as exc:
            raise MalformedSmime(exc.message) from None
        return read_cms(der, "signed_data", content)
    if ctype.get_content_type() not in _MIME_TYPES:
        raise MalformedSmime("Ce message n'est pas un message S/MIME.")
    expected = _EXPECTED.get(str(ctype.get_param("smime-type", "")).strip().lower())
    if expected is None:  # e.g. certs-only (RFC 8551 §3.4.2): not a message
        raise MalformedSmime("Type S/MIME (smime-type) non pris en charge.")
    return read_cms(_decode_body(msg), expected)


def read_cms(der: bytes, expected: str, detached: bytes | None = None) -> CmsSummary:
    """A DER ContentInfo (RFC 5652 §3) of type ``expected``, parsed once and checked whole.
    ``detached``: the content a detached signature must be of (multipart/signed).

    Raises:
        MalformedSmime: see ``read_message``.
    """
    try:
        info = cms.ContentInfo.load(der, strict=True)  # strict: nothing after the DER
        found = info["content_type"].native
        _ = info.native  # every field parsed now: asn1crypto is lazy, hostile DER fails here
    except Exception as exc:  # noqa: BLE001 — hostile ASN.1: asn1crypto raises ValueError,
        # TypeError, KeyError, IndexError… on corrupt input; none of it reaches the caller.
        raise MalformedSmime("Structure CMS illisible (RFC 5652).") from exc
    if found != expected:
        raise MalformedSmime("Structure CMS d'un autre type que celui annoncé (smime-type).")
    content = info["content"]
    if found in ENVELOPES:
        return _envelope(found, content)
    if found == "signed_data":
        return _signature(content, detached)
    return CmsSummary(found)


def addressed_to(summary: CmsSummary, cert: x509.Certificate) -> bool:
    """True when one of the envelope's recipients names ``cert`` (issuer and serial number,
    or subject key identifier: RFC 5652 §6.2.1)."""
    key_id = _key_id(cert)
    issuer: asn1x509.Name | None = None
    for rid in summary.recipients:
        if rid.key_id is not None and rid.key_id == key_id:
            return True
        if rid.serial == cert.serial_number and rid.issuer is not None:
            der = cert.issuer.public_bytes()
            if rid.issuer == der:
                return True
            # asn1crypto compares names as RFC 5280 §7.1 says (slow): only when serials match.
            issuer = issuer or asn1x509.Name.load(der)
            if _same_name(rid.issuer, issuer):
                return True
    return False


# ---------------------------------------------------------------------- envelopes
def _envelope(kind: str, data: cms.EnvelopedData | cms.AuthEnvelopedData) -> CmsSummary:
    infos = data["recipient_infos"]
    field = ("encrypted_content_info" if kind == "enveloped_data"
             else "auth_encrypted_content_info")
    encrypted = data[field]["encrypted_content"].native
    # RFC 5652 §6.1: at least one RecipientInfo; RFC 8551 §3.3: the content is inside.
    if len(infos) == 0 or not encrypted:
        raise MalformedSmime("Enveloppe S/MIME sans destinataire ou sans contenu chiffré.")
    recipients: list[RecipientId] = []
    other = 0
    for info in infos:
        if info.name == "ktri":  # RFC 5652 §6.2.1
            recipients.append(_recipient(info.chosen["rid"]))
        elif info.name == "kari":  # RFC 5652 §6.2.2: one rid per recipientEncryptedKey
            recipients += [_recipient(key["rid"])
                           for key in info.chosen["recipient_encrypted_keys"]]
        else:
            other += 1
    return CmsSummary(kind, tuple(recipients), other)


def _recipient(rid: cms.RecipientIdentifier | cms.KeyAgreementRecipientIdentifier
               ) -> RecipientId:
    chosen = rid.chosen
    if rid.name == "issuer_and_serial_number":
        return RecipientId(issuer=chosen["issuer"].dump(),
                           serial=chosen["serial_number"].native)
    if rid.name == "r_key_id":
        return RecipientId(key_id=chosen["subjectKeyIdentifier"].native)
    return RecipientId(key_id=chosen.native)  # subject_key_identifier


def _key_id(cert: x509.Certificate) -> bytes:
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return ski.digest
    except x509.ExtensionNotFound:  # RFC 5280 §4.2.1.2 method 1, what senders compute
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _same_name(der: bytes, name: asn1x509.Name) -> bool:
    try:
        return bool(asn1x509.Name.load(der) == name)
    except Exception:  # noqa: BLE001 — a name asn1crypto cannot compare matches no certificate
        return False


# ---------------------------------------------------------------------- signatures
def _signature(data: cms.SignedData, detached: bytes | None) -> CmsSummary:
    signers = data["signer_infos"]
    content = detached
    if content is None:  # opaque signed-data: the content is encapsulated (RFC 5652 §5.2)
        content = data["encap_content_info"]["content"].native
    if len(signers) == 0 or not isinstance(content, bytes):
        raise MalformedSmime("Signature S/MIME sans signataire ou sans contenu.")
    for signer in signers:
        _check_digest(signer, content)
    return CmsSummary("signed_data", signers=len(signers))


def _check_digest(signer: cms.SignerInfo, content: bytes) -> None:
    """The SignerInfo is of ``content``: its message-digest attribute is the digest of it.
    Signed attributes are required: RFC 5652 §5.3 for any content but id-data, and every
    RFC 8551 §2.5 sending agent adds them (signingTime, SMIMECapabilities)."""
    algorithm = signer["digest_algorithm"]["algorithm"].native
    attrs = signer["signed_attrs"]
    if algorithm not in _DIGESTS:
        raise MalformedSmime("Algorithme de hachage de la signature refusé (RFC 8551 §2.1).")
    if isinstance(attrs, core.Void) or len(attrs) == 0:
        raise MalformedSmime("Signature S/MIME sans attributs signés (RFC 8551 §2.5).")
    digests = [attr["values"] for attr in attrs if attr["type"].native == "message_digest"]
    if len(digests) != 1 or len(digests[0]) != 1:  # RFC 5652 §11.2: exactly one value
        raise MalformedSmime("Attribut message-digest absent ou multiple (RFC 5652 §11.2).")
    if digests[0][0].native != hashlib.new(algorithm, content).digest():
        raise MalformedSmime("La signature n'est pas celle de ce contenu (message-digest).")
