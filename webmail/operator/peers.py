"""What the operator's "Pairs" page shows (issue #20, the trust space's health), as plain rows
for its template: per whitelisted peer domain, the last probe of its relay (time, protocol
and suite, certificate DN against the whitelist, chain, revocation, days left), its failures
in a row, its traffic of the last 24 hours and its oldest waiting message; our own
certificates and CRL with the command renewing each; the peer CA files we trust.

The records come from the gateway through ``webmail.mail.relay`` (database reads only); the
probe itself is run by the function ``mss run`` hands to the webmail (``PeerCheck``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from certs import expiry
from trust_space.models import TrustedDomain
from webmail.mail import relay

WARNING_DAYS = 30  # a peer's or our certificate: amber under this
CRL_WARNING_DAYS = 2  # our CRL: mss run renews it at 2 days left
# revocation state → (badge, its colour)
REVOCATION = {"good": ("Non révoqué", "green"), "revoked": ("Révoqué", "red"),
              "unchecked": ("Non vérifiée", "amber")}
OURS_FR = {"server": "Certificat serveur (web, IMAP, soumission)",
           "operator": "Certificat opérateur (relais entre opérateurs)",
           "issuing_ca": "Autorité émettrice", "root_ca": "Autorité racine", "ca": "Autorités",
           "crl": "Liste de révocation (prochaine mise à jour)"}
RENEW = {"server": "mss cert renew server", "operator": "mss cert renew operator",
         "crl": "mss cert renew crl"}


@dataclass(frozen=True)
class Days:
    """Days left before a date, and how worrying that is (green, amber, red)."""

    days: float
    level: str

    @classmethod
    def of(cls, until: datetime, now: datetime, warning: float = WARNING_DAYS) -> Days:
        days = (until - now).total_seconds() / 86400
        return cls(days, "red" if days < 0 else "amber" if days < warning else "green")

    @property
    def text(self) -> str:
        if self.days < 0:
            return f"expiré depuis {_count(-self.days)}"
        return f"{_count(self.days)} restant{'s' if self.days >= 2 else ''}"


def _count(days: float) -> str:
    if days < 1:
        return f"{days * 24:.0f} h"
    return f"{days:.0f} jour{'s' if days >= 2 else ''}"


def age(since: datetime, now: datetime) -> str:
    """``3 h 12 min``, ``2 j 4 h``, ``45 min``."""
    minutes = max(int((now - since).total_seconds() // 60), 0)
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} j {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def peer_rows(db: Session, own_domain: str, now: datetime) -> list[dict[str, Any]]:
    """One row per whitelisted peer domain, failing ones first, then never probed."""
    entries = db.scalars(select(TrustedDomain).where(TrustedDomain.domain != own_domain)
                        .order_by(TrustedDomain.domain)).all()
    dns = {e.domain: e.certificate_dn for e in entries}
    last, in_a_row, traffic = relay.peer_health(db, dns, now - timedelta(days=1))
    rows = [_row(db, e, last.get(e.domain), in_a_row.get(e.domain, 0), traffic[e.domain], now)
            for e in entries]
    order = {"fail": 0, "never": 1, "ok": 2}
    return sorted(rows, key=lambda r: (order[r["state"]], r["domain"]))


def _row(db: Session, entry: TrustedDomain, last: Any, in_a_row: int, traffic: Any,
         now: datetime) -> dict[str, Any]:
    state = "never" if last is None else "ok" if last.ok else "fail"
    row: dict[str, Any] = {
        "domain": entry.domain, "operator": entry.operator.name, "expected": entry.certificate_dn,
        "route": f"{entry.relay_host or entry.domain}:{entry.relay_port or 25}",
        "state": state, "last": last, "in_a_row": in_a_row, "traffic": traffic,
        "delivery": _delivery(db, entry.domain),
        "oldest": age(traffic.oldest_queued, now) if traffic.oldest_queued else None,
    }
    if last is not None:
        why = relay.peer_failure_label(last.failure)
        row["why"] = why[:1].upper() + why[1:]
        row["revocation"] = REVOCATION.get(last.revocation)
        row["days"] = Days.of(last.not_after, now) if last.not_after else None
    return row


def _delivery(db: Session, domain: str) -> tuple[datetime, str] | None:
    """When the relay last tried to deliver to the domain, and what it got."""
    event = relay.last_peer_event(db, domain)
    return (event.at, event.detail) if event is not None else None


def summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {state: sum(r["state"] == state for r in rows) for state in ("ok", "fail", "never")}


def our_certificates(pki_dir: Path, now: datetime) -> list[dict[str, Any]]:
    """Our server, operator and CA certificates and our CRL (``certs.expiry``), with the
    command renewing each."""
    found = []
    for v in expiry.status(pki_dir, now):
        warning = CRL_WARNING_DAYS if v.label == "crl" else WARNING_DAYS
        found.append({"label": OURS_FR.get(v.label, v.label), "subject": v.subject,
                      "until": v.until, "error": v.error, "renew": RENEW.get(v.label),
                      "days": Days.of(v.until, now, warning) if v.until else None})
    return found


def peer_authorities(pki_dir: Path, now: datetime) -> list[dict[str, Any]]:
    """The peer CA certificates trusted (``pki/peers/*.pem``) and days until they expire."""
    found = []
    for path in sorted((pki_dir / "peers").glob("*.pem")):
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except ValueError:
            continue  # a CRL file, or unreadable
        for cert in certs:
            found.append({"file": path.name, "subject": cert.subject.rfc4514_string(),
                          "expires": cert.not_valid_after_utc,
                          "days": Days.of(cert.not_valid_after_utc, now)})
    return found
