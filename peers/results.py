"""The peers' health as data: the probe's verdict per domain (``ProbeResult``), why a probe
failed (``Failure``, in French in ``FAILURE_FR``) and what is probed (``Target``). The probe
itself (network) is ``gateway.probe``; the stored results ``peers.health``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

_DAY = 86400.0
EXPIRY_WARNING_DAYS = 30


class Failure(enum.StrEnum):
    """Why a probe failed, the first problem found (stored in ``PeerProbe.failure``)."""

    REFUSED = "refused"  # connection refused
    TIMEOUT = "timeout"  # no answer in time
    DNS = "dns"  # host name unknown
    UNREACHABLE = "unreachable"  # another network error
    SMTP = "smtp"  # an SMTP answer that is not the expected one, or the peer hung up
    NO_STARTTLS = "no_starttls"
    TLS_ALERT = "tls_alert"  # the peer sent a TLS alert (it refused our certificate…)
    TLS_VERIFY = "tls_verify"  # OpenSSL refused the peer's certificate during the handshake
    TLS_CLOSED = "tls_closed"  # the peer hung up right after the handshake, without a word
    TLS = "tls"  # another TLS error
    CHAIN = "chain"  # the certificate does not validate against our trusted peer CAs
    REVOKED = "revoked"  # listed on the CRL we hold for its issuer
    DN_MISMATCH = "dn_mismatch"  # subject DN differs from the whitelist's


FAILURE_FR = {
    Failure.REFUSED: "connexion refusée", Failure.TIMEOUT: "pas de réponse",
    Failure.DNS: "nom d'hôte inconnu", Failure.UNREACHABLE: "injoignable",
    Failure.SMTP: "dialogue SMTP interrompu", Failure.NO_STARTTLS: "pas de STARTTLS",
    Failure.TLS_ALERT: "alerte TLS du pair", Failure.TLS_VERIFY: "certificat refusé par TLS",
    Failure.TLS_CLOSED: "connexion fermée après TLS", Failure.TLS: "échec TLS",
    Failure.CHAIN: "chaîne de certification invalide",
    Failure.REVOKED: "certificat révoqué", Failure.DN_MISMATCH: "DN différent de la liste blanche",
}


@dataclass(frozen=True)
class Target:
    """One relay and the whitelisted domains routed to it, each with its expected DN."""

    host: str
    port: int
    domains: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ProbeResult:
    """The probe's verdict for one domain (``ok``: a delivery would go ahead)."""

    domain: str
    host: str
    port: int
    at: datetime
    ok: bool
    failure: str = ""
    detail: str = ""
    tls_version: str = ""
    cipher: str = ""
    subject_dn: str = ""
    expected_dn: str = ""
    dn_match: bool | None = None
    chain: str = ""
    chain_detail: str = ""
    revocation: str = ""
    revocation_detail: str = ""
    not_after: datetime | None = None
    duration_ms: int = 0

    def days_left(self, now: datetime | None = None) -> float | None:
        """Days before the peer certificate's notAfter (negative once past)."""
        if self.not_after is None:
            return None
        return (self.not_after - (now or datetime.now(UTC))).total_seconds() / _DAY
