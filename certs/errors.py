"""Errors of the PKI, S/MIME and card layers. Each is distinct so callers (SMTP, HTTP, CLI)
can say precisely what went wrong; the French text is shown to users as is."""

from __future__ import annotations

from core.errors import MssError


class CertError(MssError):
    """Base of every certs/ error."""

    code = "cert"


class PkiNotInitialised(CertError):
    code = "pki_missing"


class RenewalError(CertError):
    """Our server or operator certificate cannot be renewed or installed as asked (file
    missing or of the wrong kind, key mismatch, expired, no pending key…)."""

    code = "renewal"


class UntrustedCertificate(CertError):
    """The certificate does not chain to the trust-space CA (or the chain is malformed)."""

    code = "untrusted"


class CertificateExpired(CertError):
    """Outside its validity period (expired, or not yet valid)."""

    code = "expired"


class CertificateRevoked(CertError):
    code = "revoked"


class WrongPurpose(CertError):
    """The certificate is valid but not for this use (EKU / key usage)."""

    code = "wrong_purpose"


class NotSigned(CertError):
    code = "not_signed"


class SignatureInvalid(CertError):
    """The signature does not match the content (tampered message or broken signature)."""

    code = "bad_signature"


class MalformedSmime(CertError):
    code = "malformed_smime"


class DecryptionFailed(CertError):
    """No recipient info for our key, or the key does not open the envelope."""

    code = "decrypt_failed"


class CardError(CertError):
    """Base of smart-card errors."""

    code = "card"


class CardNotFound(CardError):
    code = "card_not_found"


class WrongPin(CardError):
    code = "wrong_pin"


class PinLocked(CardError):
    code = "pin_locked"
