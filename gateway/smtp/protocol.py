"""The SMTP protocol object of every listener: aiosmtpd's ``SMTP`` (through
``gateway.smtp.aiosmtpd_private``) with enhanced codes on its own replies, no AUTH advertised
on the relay port, long AUTH lines, and a failed STARTTLS handshake logged in one line.

One instance per connection, so it also holds what the connection learnt: the peer
operator's DN on the relay port (``peer_dn``).
"""

from __future__ import annotations

import collections
import logging
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, Session, TLSSetupException, syntax

from gateway.smtp.aiosmtpd_private import PrivateOverrides
from gateway.smtp.replies import AUTH_LINE_LIMIT, REWRITE

log = logging.getLogger("mss.gateway")
TOKEN_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")


class _QuietLegacy(logging.Filter):
    """aiosmtpd 1.4 warns on every AUTH that it sets its deprecated ``login_data`` itself,
    and on every relay connection that the relay requires a client certificate (it must:
    mutual TLS between operators)."""

    _EXPECTED = ("login_data is deprecated", "tls_context.verify_mode not in")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(expected in message for expected in self._EXPECTED)


logging.getLogger("mail.log").addFilter(_QuietLegacy())


class GatewaySmtp(PrivateOverrides):
    """``implicit_tls`` for the submissions port, where the whole connection is TLS (RFC 8314)
    so AUTH is allowed; ``offer_auth`` False on the relay port; ``tokens``: offer OAUTHBEARER
    and XOAUTH2 (an identity provider is configured)."""

    # The stream's line limit, for AUTH's long lines; every other command keeps aiosmtpd's
    # 512 (``command_size_limits``) and text lines 1000 (``TEXT_LINE_LIMIT``, in DATA).
    line_length_limit = AUTH_LINE_LIMIT + 2

    def __init__(self, handler: Any, *, implicit_tls: bool = False, offer_auth: bool = True,
                 tokens: bool = False, **kwargs: Any) -> None:
        if not offer_auth:  # no SASL mechanism at all, not even aiosmtpd's built-in ones
            kwargs["auth_exclude_mechanism"] = ["LOGIN", "PLAIN"]
        elif not tokens:
            kwargs["auth_exclude_mechanism"] = list(TOKEN_MECHANISMS)
        super().__init__(handler, **kwargs)
        # Per connection (aiosmtpd's is one dict shared by the class): AUTH may be long.
        self.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit, {"AUTH": AUTH_LINE_LIMIT})
        self._offer_auth = offer_auth
        self.peer_dn = ""  # relay: the peer operator's DN once MAIL FROM accepted it
        if implicit_tls:
            self.allow_auth_without_starttls()

    async def push(self, status: bytes | str) -> None:
        if not self._offer_auth and isinstance(status, str) and status.startswith("250-AUTH"):
            # The relay port authenticates peers by mutual TLS only (ECO.1.1.3): advertising
            # AUTH (RFC 4954 §3) there would invite password guessing that can never succeed.
            return
        if isinstance(status, str):
            await super().push(REWRITE.get(status, status))
        else:
            await super().push(status)

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self.transport.get_extra_info("ssl_object") if self.transport else None

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # RFC 3207 §4.2: no second TLS negotiation on a session that already has one
        # (after STARTTLS, or on the implicit-TLS submissions port).
        if self.ssl_object is not None:
            await self.push("503 5.5.1 Session deja en TLS / TLS already active")
            return
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as error:
            # A client that cannot or will not negotiate TLS (garbage, TLS 1.0, a scanner) is
            # not an internal error: one line, no traceback; then the connection is closed,
            # as aiosmtpd does for this exception (no reply can be sent on a broken TLS layer).
            log.warning("négociation TLS (STARTTLS) échouée avec %s : %s",
                        ip_of(self.session), _tls_reason(error))
            if self.transport is not None:
                self.transport.close()
            self.connection_lost(error)


def ip_of(session: Session | None) -> str:
    """The client's address, '' when unknown."""
    if session is None:
        return ""
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def _tls_reason(error: BaseException) -> str:
    """Why a TLS handshake failed, in OpenSSL's words (``WRONG_VERSION_NUMBER``…)."""
    cause = error.__cause__ or error
    return str(getattr(cause, "reason", None) or type(cause).__name__)
