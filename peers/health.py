"""The peers' health as recorded (issue #20): which relays to probe, the probes' results kept
per domain, the last one of each, failures in a row. The checking run (probe, store, audit)
for ``mss peers check``, the schedule of ``mss run`` and the operator's button is
``gateway.probe.check``: the probe is network I/O, this module database reads and writes.

Several gateway processes share one database: a scheduled run probes only the domains whose
last result is older than the period, so that replicas do not pile up probes. The results'
table (``PeerProbe``) lives here, beside the only code that writes it; it is not part of the
queue (``spool``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from core.db import Base, UTCDateTime, utcnow
from core.errors import NotFound
from peers.results import ProbeResult, Target
from trust_space.models import TrustedDomain

KEEP = 200  # results kept per domain (a week and more at the default hourly probe)
_ID = BigInteger().with_variant(Integer(), "sqlite")  # rowid alias on SQLite


class PeerProbe(Base):
    """What one probe of a peer's relay showed for one whitelisted domain (issue #20, the trust
    space's health): reached or the precise failure, TLS protocol and suite, the certificate's
    subject against the whitelist's DN, chain, revocation and end of validity. The newest
    ``KEEP`` rows of each domain are kept."""

    __tablename__ = "peer_probe"
    __table_args__ = (Index("ix_peer_probe_domain_id", "domain", "id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    domain: Mapped[str] = mapped_column(String(253))
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    failure: Mapped[str] = mapped_column(String(32), default="")  # peers.results.Failure
    detail: Mapped[str] = mapped_column(String(1000), default="")
    tls_version: Mapped[str] = mapped_column(String(16), default="")
    cipher: Mapped[str] = mapped_column(String(100), default="")
    subject_dn: Mapped[str] = mapped_column(String(500), default="")
    expected_dn: Mapped[str] = mapped_column(String(500), default="")
    dn_match: Mapped[bool | None] = mapped_column(Boolean)  # None: no certificate seen
    chain: Mapped[str] = mapped_column(String(16), default="")  # valid / invalid / ""
    chain_detail: Mapped[str] = mapped_column(String(500), default="")
    revocation: Mapped[str] = mapped_column(String(16), default="")  # good/revoked/unchecked
    revocation_detail: Mapped[str] = mapped_column(String(500), default="")
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    requested_by: Mapped[str] = mapped_column(String(254), default="")


def targets(session: Session, own_domain: str, domains: Iterable[str] | None = None
            ) -> list[Target]:
    """The relays of the whitelisted peer domains (all, or ``domains``), as deliveries route:
    ``relay_host:relay_port``, else the domain on port 25. Our own domain is not a peer.

    Raises:
        NotFound: a domain asked for is not whitelisted.
    """
    query = select(TrustedDomain).where(TrustedDomain.domain != own_domain.lower())
    wanted = sorted({d.strip().lower() for d in domains}) if domains is not None else None
    if wanted is not None:
        query = query.where(TrustedDomain.domain.in_(wanted))
    entries = session.scalars(query.order_by(TrustedDomain.domain)).all()
    if wanted is not None:
        missing = set(wanted) - {e.domain for e in entries}
        if missing:
            raise NotFound(f"domaine {', '.join(sorted(missing))} absent de la liste blanche "
                           "(ou notre propre domaine)")
    relays: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for e in entries:
        relays.setdefault((e.relay_host or e.domain, e.relay_port or 25), []).append(
            (e.domain, e.certificate_dn))
    return [Target(host, port, tuple(found)) for (host, port), found in relays.items()]


def save(session: Session, results: Iterable[ProbeResult], requested_by: str) -> None:
    """Store the results, keeping the ``KEEP`` newest of each domain."""
    domains = set()
    for r in results:
        domains.add(r.domain)
        session.add(PeerProbe(
            at=r.at, domain=r.domain, host=r.host[:253], port=r.port, ok=r.ok,
            failure=r.failure, detail=r.detail[:1000], tls_version=r.tls_version[:16],
            cipher=r.cipher[:100], subject_dn=r.subject_dn[:500],
            expected_dn=r.expected_dn[:500], dn_match=r.dn_match, chain=r.chain,
            chain_detail=r.chain_detail[:500], revocation=r.revocation,
            revocation_detail=r.revocation_detail[:500], not_after=r.not_after,
            duration_ms=r.duration_ms, requested_by=requested_by[:254]))
    session.flush()
    for domain in domains:
        edge = session.scalar(select(PeerProbe.id).where(PeerProbe.domain == domain)
                              .order_by(PeerProbe.id.desc()).offset(KEEP).limit(1))
        if edge is not None:
            session.execute(delete(PeerProbe).where(PeerProbe.domain == domain,
                                                    PeerProbe.id <= edge))


def latest(session: Session, domains: Iterable[str] | None = None
           ) -> dict[str, ProbeResult]:
    """The newest result of each domain (of ``domains``, or of all)."""
    newest = select(func.max(PeerProbe.id)).group_by(PeerProbe.domain)
    if domains is not None:
        newest = newest.where(PeerProbe.domain.in_(list(domains)))
    rows = session.scalars(select(PeerProbe).where(PeerProbe.id.in_(newest)))
    return {row.domain: result_of(row) for row in rows}


def result_of(row: PeerProbe) -> ProbeResult:
    """A stored result as the probe gave it (plain data, usable once the session ends)."""
    return ProbeResult(
        row.domain, row.host, row.port, row.at, row.ok, row.failure, row.detail,
        row.tls_version, row.cipher, row.subject_dn, row.expected_dn, row.dn_match, row.chain,
        row.chain_detail, row.revocation, row.revocation_detail, row.not_after,
        row.duration_ms)


def failures_in_a_row(session: Session) -> dict[str, int]:
    """Per domain, the failed results since its last good one (domains at 0 left out)."""
    later = aliased(PeerProbe)
    last_ok = (select(func.max(later.id)).where(later.domain == PeerProbe.domain, later.ok)
               .scalar_subquery())
    rows = session.execute(select(PeerProbe.domain, func.count()).where(
        PeerProbe.ok.is_(False), PeerProbe.id > func.coalesce(last_ok, 0))
        .group_by(PeerProbe.domain))
    return {domain: int(count) for domain, count in rows}


def due(session: Session, own_domain: str, every: timedelta,
        now: datetime | None = None) -> list[str]:
    """Whitelisted peer domains never probed, or whose last result is older than ``every``."""
    peers = session.scalars(select(TrustedDomain.domain).where(
        TrustedDomain.domain != own_domain.lower())).all()
    last = dict(session.execute(select(PeerProbe.domain, func.max(PeerProbe.at))
                                .group_by(PeerProbe.domain)).all())
    edge = (now or utcnow()) - every
    return sorted(d for d in peers if last.get(d) is None or last[d] <= edge)


@dataclass(frozen=True)
class PeerState:
    """What the metrics export of a whitelisted domain's last result."""

    domain: str
    at: datetime
    ok: bool
    days_left: float | None
    dn_match: bool | None
    failures_in_a_row: int


def states(session: Session, own_domain: str, now: datetime | None = None) -> list[PeerState]:
    """The last result of every whitelisted peer domain probed at least once."""
    peers = set(session.scalars(select(TrustedDomain.domain).where(
        TrustedDomain.domain != own_domain.lower())))
    rows = latest(session)
    in_a_row = failures_in_a_row(session)
    when = now or utcnow()
    return [PeerState(d, r.at, r.ok, (r.not_after - when).total_seconds() / 86400
                      if r.not_after else None, r.dn_match, in_a_row.get(d, 0))
            for d, r in sorted(rows.items()) if d in peers]
