"""Traffic with each peer domain over a recent period (issue #20, the operator's "Pairs" page),
from what the gateway already records:

- sent, deferred, bounced: the delivery timeline (``DeliveryEvent`` of peer and clear
  recipients: ``delivered``, ``deferred``, ``bounced``), counted in messages (queue ids);
- received: the audit trail's ``smtp.relay.receive``, whose actor is the normalised DN of the
  peer relay that handed the message over — counted for every domain with that DN;
- refused by us: ``smtp.relay.refuse`` from that DN, or whose sender is of the domain (a
  refusal at MAIL FROM names no DN yet);
- the oldest message still waiting for a recipient of the domain (the queue).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.audit import AuditRecord
from spool.events import ATTEMPTS, Event, SmtpAction, of_kinds
from spool.models import DeliveryEvent, QueuedMessage, QueueRecipient, RecipientKind
from spool.queue import PENDING
from trust_space.errors import NamingError
from trust_space.naming import normalise_dn

ROWS = 100_000  # at most this many rows read per source (a very busy day is cut short)


@dataclass
class Traffic:
    """One domain's messages since the period's start."""

    sent: int = 0
    received: int = 0
    deferred: int = 0
    bounced: int = 0  # refused by the peer (or expired)
    refused: int = 0  # refused by us on the relay port
    oldest_queued: datetime | None = None
    _sent: set[str] = field(default_factory=set, repr=False)
    _deferred: set[str] = field(default_factory=set, repr=False)
    _bounced: set[str] = field(default_factory=set, repr=False)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def traffic(session: Session, peers: Mapping[str, str], since: datetime) -> dict[str, Traffic]:
    """``peers``: domain → whitelist DN. A ``Traffic`` for each of them."""
    found = {d: Traffic() for d in peers}
    _timeline(session, found, since)
    by_dn: dict[str, list[str]] = {}
    for domain, dn in peers.items():
        try:
            by_dn.setdefault(normalise_dn(dn)[:254], []).append(domain)
        except NamingError:
            continue  # a DN no relay can present: nothing received from it
    _received(session, found, by_dn, since)
    _refused(session, found, by_dn, since)
    _oldest(session, found)
    for t in found.values():
        t.sent, t.deferred, t.bounced = len(t._sent), len(t._deferred), len(t._bounced)
    return found


def _timeline(session: Session, found: dict[str, Traffic], since: datetime) -> None:
    rows = session.execute(select(DeliveryEvent.queue_id, DeliveryEvent.recipient,
                                  DeliveryEvent.event).where(
        DeliveryEvent.at >= since,
        DeliveryEvent.event.in_(ATTEMPTS),
        of_kinds(RecipientKind.PEER, RecipientKind.CLEAR)).limit(ROWS))
    for queue_id, recipient, event in rows:
        t = found.get(_domain(recipient))
        if t is not None:
            by_event: dict[str, set[str]] = {Event.DELIVERED: t._sent,
                                             Event.DEFERRED: t._deferred,
                                             Event.BOUNCED: t._bounced}
            by_event[event].add(queue_id)


def _received(session: Session, found: dict[str, Traffic], by_dn: dict[str, list[str]],
              since: datetime) -> None:
    rows = session.execute(select(AuditRecord.actor, func.count()).where(
        AuditRecord.action == SmtpAction.RECEIVE, AuditRecord.at >= since,
        AuditRecord.actor.in_(list(by_dn))).group_by(AuditRecord.actor))
    for actor, count in rows:
        for domain in by_dn.get(actor, []):
            found[domain].received += int(count)


def _refused(session: Session, found: dict[str, Traffic], by_dn: dict[str, list[str]],
             since: datetime) -> None:
    rows = session.execute(select(AuditRecord.actor, AuditRecord.request).where(
        AuditRecord.action == SmtpAction.RELAY_REFUSE, AuditRecord.at >= since).limit(ROWS))
    for actor, request in rows:
        domains = set(by_dn.get(actor, []))
        try:
            sender = json.loads(request or "{}").get("from", "")
        except (ValueError, AttributeError):
            sender = ""
        if isinstance(sender, str) and _domain(sender) in found:
            domains.add(_domain(sender))
        for domain in domains:
            found[domain].refused += 1


def _oldest(session: Session, found: dict[str, Traffic]) -> None:
    rows = session.execute(select(QueueRecipient.address, func.min(QueuedMessage.created_at))
                           .join(QueuedMessage, QueuedMessage.id == QueueRecipient.queue_id)
                           .where(QueueRecipient.state.in_(PENDING),
                                  QueueRecipient.kind.in_([RecipientKind.PEER,
                                                           RecipientKind.CLEAR]))
                           .group_by(QueueRecipient.address))
    for address, oldest in rows:
        t = found.get(_domain(address))
        if t is not None and oldest is not None and (t.oldest_queued is None
                                                     or oldest < t.oldest_queued):
            t.oldest_queued = oldest
