"""Errors of the gateway (CONVENTIONS.md, 4): each one knows its SMTP reply.

A ``GatewayError`` carries the reply code (RFC 5321 §4.2), the enhanced status code
(RFC 3463) and a human text, French first then English (``"… / …"``). The SMTP handler turns it
into a reply in one place with ``smtp_reply()``; nothing else formats replies.

To add an error, subclass and set the class attributes; the text is given when raising::

    class RateLimited(GatewayError):
        code = "rate_limited"
        smtp_code = 451
        enhanced = "4.7.1"

Texts never carry message bodies, subjects or keys (CONVENTIONS.md, 12).
"""

from __future__ import annotations

import unicodedata

from core.errors import MssError

# Typographic characters NFKD leaves alone, and their nearest ASCII.
_ASCII_PUNCTUATION = str.maketrans({"«": '"', "»": '"', "\u2019": "'", "\u2018": "'",
                                    "\u201c": '"', "\u201d": '"', "\u2013": "-",
                                    "\u2014": "-", "\u2026": "...", "\u00a0": " ",
                                    "\u202f": " "})


def ascii_text(text: str) -> str:
    """``text`` on one line in printable US-ASCII: accents dropped ("Échec" → "Echec"), quotes
    and dashes simplified, control characters and anything else replaced.

    For SMTP replies without SMTPUTF8 (RFC 5321 §4.2, RFC 6531 §3.7.4.2) and for header
    field values that must stay 7-bit (RFC 5322 §2.2)."""
    folded = unicodedata.normalize("NFKD", text.translate(_ASCII_PUNCTUATION))
    chars = (c for c in folded if not unicodedata.combining(c))
    return " ".join("".join(c if " " <= c <= "~" else " " if c.isspace() else "?"
                            for c in chars).split())


class GatewayError(MssError):
    """Base of every gateway error: a refusal or a failure with its SMTP reply."""

    code = "gateway"
    smtp_code: int = 451  # RFC 5321 §4.2.3: local error, try again later
    enhanced: str = "4.3.0"  # RFC 3463: other or undefined mail system status

    def __init__(self, message: str, *, smtp_code: int | None = None,
                 enhanced: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        if smtp_code is not None:
            self.smtp_code = smtp_code
        if enhanced is not None:
            self.enhanced = enhanced

    @property
    def permanent(self) -> bool:
        """A 5yz reply: the client must not retry the same transaction (RFC 5321 §4.2.1)."""
        return self.smtp_code >= 500

    def smtp_reply(self, *, utf8: bool = False) -> str:
        """The one-line reply, e.g. ``"554 5.7.5 Pas de certificat … / No certificate …"``.

        Always one line: CR and LF are replaced, so a text can never end the reply early and
        inject another. Without ``utf8`` (the client did not ask for SMTPUTF8, RFC 6531) the
        text is folded to ASCII, as RFC 5321 §4.2 wants (and aiosmtpd encodes replies as
        ASCII then)."""
        text = " ".join(self.message.split()) if utf8 else ascii_text(self.message)
        return f"{self.smtp_code} {self.enhanced} {text}"


class SecurityRequestInvalid(GatewayError):
    """The submitter's ``MSS-Security`` header field cannot be read."""

    code = "security_request"
    smtp_code = 554  # RFC 5321 §4.3.2: transaction failed (after DATA)
    enhanced = "5.6.0"  # RFC 3463: other or undefined media error


class UnsignableMessage(GatewayError):
    """The message's MIME structure cannot be signed as it is (RFC 8551 §3.1 canonical form)."""

    code = "unsignable"
    smtp_code = 554
    enhanced = "5.6.0"  # RFC 3463: other or undefined media error


class MalformedHeader(GatewayError):
    """The header section is one readers could read differently (``mailformat.headers.check``):
    a bare CR or LF, a line that is not a field, a field RFC 5322 §3.6 allows once, twice."""

    code = "malformed_header"
    smtp_code = 550  # permanent: the same bytes will be refused again
    enhanced = "5.6.0"  # RFC 3463: other or undefined media error


class ProtectionUnavailable(GatewayError):
    """The security asked for (or required) cannot be applied: no signing key, no
    encryption certificate for a recipient, or an unusable certificate."""

    code = "protection_unavailable"
    smtp_code = 554
    enhanced = "5.7.5"  # RFC 3463: cryptographic failure (key not available or invalid)


class MailboxKeyUnreadable(GatewayError):
    """A mailbox's private key cannot be opened with the operator's secret: an operator
    problem, so a temporary failure for the sender."""

    code = "mailbox_key"
    smtp_code = 451
    enhanced = "4.7.5"


class NotifyError(GatewayError):
    """A notice could not be handed to the smarthost (temporary: the caller retries)."""

    code = "notify"
    smtp_code = 451
    enhanced = "4.4.1"  # RFC 3463: no answer from host


# ---------------------------------------------------------------------- relay policy refusals
# (gateway.accept.checks, gateway.accept.auth, gateway.smtp.listeners; texts are given when raising)
class SenderRefused(GatewayError):
    """MAIL FROM: the authenticated identity may not send as this mailbox."""

    code = "sender_refused"
    smtp_code = 550  # RFC 5321 §4.2.2: mailbox unavailable / not allowed
    enhanced = "5.7.1"  # RFC 3463: delivery not authorized, message refused


class RecipientRefused(GatewayError):
    """RCPT TO: the recipient is outside the trust space (refused at RCPT, CONVENTIONS 2)."""

    code = "recipient_refused"
    smtp_code = 550
    enhanced = "5.7.1"


class TooManyRecipients(GatewayError):
    code = "too_many_recipients"
    smtp_code = 452  # RFC 5321 §4.5.3.1.10: too many recipients, the client sends the rest later
    enhanced = "4.5.3"


class MessageTooBig(GatewayError):
    code = "too_big"
    smtp_code = 552  # RFC 5321 §4.5.3.1.10, RFC 1870 (SIZE)
    enhanced = "5.3.4"  # RFC 3463: message too big for system


class RateLimited(GatewayError):
    code = "rate_limited"
    smtp_code = 451
    enhanced = "4.7.1"


class LoopDetected(GatewayError):
    code = "loop"
    smtp_code = 554  # RFC 5321 §6.3: loop detection by counting Received fields
    enhanced = "5.4.6"  # RFC 3463: routing loop detected


class AuthRefused(GatewayError):
    """AUTH failed (RFC 4954 §6): wrong credentials, revoked or unknown certificate."""

    code = "auth_refused"
    smtp_code = 535
    enhanced = "5.7.8"  # RFC 4954: authentication credentials invalid


class TokenAuthRefused(AuthRefused):
    """OAUTHBEARER / XOAUTH2: the access token does not open the mailbox asked for (invalid,
    expired, revoked, another audience, too weak, no account, not its mailbox, locked). The
    handler first sends ``status`` in the RFC 7628 §3.2.2 error challenge, then this reply."""

    code = "auth_token"
    status = "invalid_token"  # RFC 6750 §3.1; "insufficient_user_authentication" (RFC 9470)


class AuthUnavailable(GatewayError):
    """AUTH cannot be decided now (the identity provider does not answer)."""

    code = "auth_unavailable"
    smtp_code = 454  # RFC 4954 §6: temporary authentication failure
    enhanced = "4.7.0"


class SignatureRefused(GatewayError):
    """Inbound from a peer: the S/MIME signature does not verify (never delivered as
    verified)."""

    code = "bad_signature"
    smtp_code = 550
    enhanced = "5.7.7"  # RFC 3463: message integrity failure


class LocalFailure(GatewayError):
    """Anything unexpected: the client gets a temporary failure, never a traceback."""

    code = "local_failure"
    smtp_code = 451
    enhanced = "4.3.0"


class EndToEndRefused(GatewayError):
    """A message the client protected end to end (RFC 8551) is not what it claims: its CMS
    is unreadable or of another type, its signature is not of its content, or its envelope
    is not addressed to every recipient's certificate (``pipeline.check_end_to_end``)."""

    code = "end_to_end_refused"
    smtp_code = 554  # RFC 5321 §4.3.2: transaction failed (after DATA)
    enhanced = "5.7.5"  # RFC 3463: cryptographic failure
