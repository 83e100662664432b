"""SMTP replies: the one place where an error becomes a reply (``reply_for``, CONVENTIONS.md,
4), and the enhanced codes (RFC 3463) given to the replies aiosmtpd writes itself.

A ``GatewayError`` knows its reply; anything else is logged here and the client gets
``451 4.3.0``, never a traceback.
"""

from __future__ import annotations

import logging

from gateway.errors import GatewayError, LocalFailure

log = logging.getLogger("mss.gateway")

TOO_MUCH = "552 5.3.4 Message trop volumineux / message size exceeds fixed maximum"
TOO_LONG = "500 5.5.0 Ligne trop longue / line too long (RFC 5321 4.5.3.1.6)"
TEXT_LINE_LIMIT = 1001  # RFC 5321 §4.5.3.1.6: 1000 octets with the CRLF (aiosmtpd's default)
AUTH_LINE_LIMIT = 12288  # RFC 4954 §4: the AUTH command and the client's responses
SUCCESS = "235 2.7.0 Authentification reussie / authentication successful"

# aiosmtpd writes a few replies itself, without RFC 3463 enhanced codes: give them one.
REWRITE = {
    "552 Error: message size exceeds fixed maximum message size": TOO_MUCH,
    "552 Error: Too much mail data": TOO_MUCH,
    "530 Must issue a STARTTLS command first":
        "530 5.7.0 STARTTLS d'abord / must issue a STARTTLS command first",
    "535 5.7.8 Authentication credentials invalid":
        "535 5.7.8 Identifiants refuses / authentication credentials invalid",
}


def reply_for(error: BaseException) -> str:
    """The one place where an error becomes an SMTP reply."""
    if isinstance(error, GatewayError):
        return error.smtp_reply()
    log.error("erreur interne pendant une session SMTP (%s)", type(error).__name__,
              exc_info=error)
    return LocalFailure("Erreur temporaire du relais, réessayez / temporary relay error, "
                        "try again later").smtp_reply()
