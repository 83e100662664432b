"""SMTP to a peer operator's relay (DESIGN.md step 5), with mutual TLS.

Route: ``TrustedDomain.relay_host``/``relay_port`` (``mss whitelist route``); without one, the
domain itself on port 25 (no MX look-up). The session is STARTTLS (RFC 3207) presenting our
operator certificate (``gateway.smtp.tls.peer_client_context``, ECO.1.1.3 suites). Before MAIL FROM
the peer's certificate must validate against our CA and the trusted peers' (chain, CRL) and
its subject DN must equal the whitelist's ``certificate_dn`` for that domain: otherwise the
delivery is deferred and counted as a TLS failure for that peer — never sent in the clear or
to an impostor.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from certs.errors import CertError
from certs.validation import TrustStore, validate
from core.db import Database
from gateway.errors import GatewayError
from gateway.smtp.tls import peer_certificate
from mailformat.lineends import to_crlf
from mailformat.replies import enhanced_or_default
from trust_space.models import TrustedDomain
from trust_space.naming import normalise_dn


class PeerUnavailable(GatewayError):
    """The peer's relay cannot be reached or talked to now (temporary)."""

    code = "peer_unavailable"
    smtp_code = 451
    enhanced = "4.4.1"


class PeerTlsFailure(PeerUnavailable):
    """The peer's certificate does not validate or does not match its whitelist entry."""

    code = "peer_tls"
    enhanced = "4.7.0"


class PeerNotTrusted(GatewayError):
    """The domain left the whitelist since the message was accepted (permanent)."""

    code = "peer_not_trusted"
    smtp_code = 550
    enhanced = "5.7.1"


@dataclass(frozen=True)
class Reply:
    """The peer's answer for one recipient."""

    code: int
    text: str

    @property
    def enhanced(self) -> str:
        """The peer's enhanced status code, or the undefined one of the reply's class."""
        return enhanced_or_default(self.code, self.text)


class Outbound:
    """Delivers to peers; one SMTP session per (message, domain)."""

    def __init__(self, db: Database, hostname: str, context: Callable[[], ssl.SSLContext],
                 store: Callable[[], TrustStore], timeout: float = 60.0) -> None:
        self.db, self.hostname, self.timeout = db, hostname, timeout
        self._context, self._store = context, store

    def route(self, domain: str) -> tuple[str, int, str]:
        """(host, port, expected DN) of a whitelisted domain.

        Raises:
            PeerNotTrusted: the domain is not (or no longer) whitelisted.
        """
        with self.db.read() as session:
            entry = session.scalar(select(TrustedDomain).where(TrustedDomain.domain == domain))
            if entry is None:
                raise PeerNotTrusted(f"Domaine {domain} hors de la liste blanche / domain not "
                                     "whitelisted")
            return entry.relay_host or domain, entry.relay_port or 25, entry.certificate_dn

    def send(self, domain: str, raw: bytes, sender: str,
             recipients: Sequence[str]) -> dict[str, Reply]:
        """Send ``raw`` to ``recipients`` of ``domain``; a Reply per recipient.

        Raises:
            PeerUnavailable / PeerTlsFailure: nothing was sent, retry later.
            PeerNotTrusted: see ``route``.
        """
        host, port, expected_dn = self.route(domain)
        try:
            with smtplib.SMTP(host, port, local_hostname=self.hostname,
                              timeout=self.timeout) as smtp:
                self._secure(smtp, expected_dn)
                return self._transaction(smtp, raw, sender, recipients)
        except (OSError, smtplib.SMTPException) as exc:
            if isinstance(exc, ssl.SSLError | ssl.CertificateError):
                raise PeerTlsFailure(f"TLS avec {domain} impossible / TLS failure "
                                     f"({type(exc).__name__})") from None
            raise PeerUnavailable(f"Relais de {domain} injoignable / peer relay unreachable "
                                  f"({type(exc).__name__})") from None

    def _secure(self, smtp: smtplib.SMTP, expected_dn: str) -> None:
        smtp.ehlo()
        if not smtp.has_extn("starttls"):
            raise PeerTlsFailure("Le relais pair n'offre pas STARTTLS / peer offers no STARTTLS")
        smtp.starttls(context=self._context())
        smtp.ehlo()
        sock = smtp.sock
        cert = peer_certificate(sock if isinstance(sock, ssl.SSLSocket) else None)
        if cert is None:
            raise PeerTlsFailure("Pas de certificat du pair / no peer certificate")
        try:
            validate(cert, self._store(), purpose="server")
        except CertError as exc:
            raise PeerTlsFailure(f"Certificat du pair refusé / peer certificate refused "
                                 f"({exc.code})") from None
        if normalise_dn(cert.subject.rfc4514_string()) != normalise_dn(expected_dn):
            raise PeerTlsFailure("Certificat du pair différent de la liste blanche / peer "
                                 "certificate does not match the whitelist")

    @staticmethod
    def _transaction(smtp: smtplib.SMTP, raw: bytes, sender: str,
                     recipients: Sequence[str]) -> dict[str, Reply]:
        code, text = smtp.mail(sender)
        if code != 250:
            return {r: Reply(code, text.decode("utf-8", "replace")) for r in recipients}
        replies, accepted = {}, []
        for rcpt in recipients:
            code, text = smtp.rcpt(rcpt)
            replies[rcpt] = Reply(code, text.decode("utf-8", "replace"))
            if code in (250, 251):
                accepted.append(rcpt)
        if not accepted:
            smtp.rset()
            return replies
        try:
            code, text = smtp.data(to_crlf(raw))
        except smtplib.SMTPDataError as exc:  # refused at DATA (354 not given)
            error = exc.smtp_error
            code, text = exc.smtp_code, error if isinstance(error, bytes) else error.encode()
        for rcpt in accepted:  # one DATA reply for every accepted recipient (RFC 5321 §3.3)
            replies[rcpt] = Reply(code, text.decode("utf-8", "replace"))
        return replies
