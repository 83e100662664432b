"""What the webmail reads of the relay's records: the delivery timeline of a sent message,
the queue for operators, the peers' health.

The gateway keeps one ``DeliveryEvent`` row per step and recipient (``spool.events.Event``:
queued, delivered, deferred, bounced, dsn, mdn…), keyed by queue id and Message-ID; the queue
row of a message lists its recipients by kind, among them the sender's own ``Sent`` copy. The
timeline and the queue are read through ``spool``, below both the gateway and the webmail.
The peers' probe results and traffic are read from ``peers`` (database reads and plain
data, no socket), below the webmail like the queue.

A timeline is shown only for a queue entry whose ``Sent`` copy went to the mailbox being
read: a Message-ID alone is not proof (anyone can put any Message-ID in a draft).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.localtime import short_datetime
from mailformat.replies import parse_reply
from peers import health, traffic
from peers.results import FAILURE_FR, Failure
from spool import queue as q
from spool.events import ATTEMPTS, Event, of_kinds
from spool.models import DeliveryEvent, RecipientKind
from trust_space.directory import display_names

EVENT_FR: dict[str, str] = {
    Event.QUEUED: "Pris en charge par la passerelle",
    Event.DELIVERED: "Remis",
    Event.DEFERRED: "Remise différée",
    Event.BOUNCED: "Échec définitif",
    Event.FAILED: "Abandonné",
    Event.DSN: "Avis de non-remise envoyé",
    Event.MDN: "Accusé de réception reçu",
    Event.DUPLICATE: "Doublon ignoré",
    Event.QUARANTINED: "En quarantaine",
}
# The sender's own copy and notices are not recipients.
_HIDDEN_KINDS = (RecipientKind.SENT, RecipientKind.NOTIFY)
_FAILURES = (Event.DEFERRED, Event.BOUNCED, Event.FAILED)  # steps whose detail says why
_LEVELS: dict[str, str] = {  # a step's colour; any other: "info"
    Event.DELIVERED: "ok", Event.MDN: "ok", Event.DEFERRED: "warn", Event.BOUNCED: "bad",
    Event.FAILED: "bad", Event.DSN: "bad"}


@dataclass
class Step:
    at: datetime
    event: str
    detail: str

    @property
    def label(self) -> str:
        return EVENT_FR.get(self.event, self.event)

    @property
    def level(self) -> str:
        return _LEVELS.get(self.event, "info")


# What each step says, as a sentence a person reads ({who}: the recipient's name, {when}:
# "03/12 à 21:09" in Paris time).
SENTENCES: dict[str, str] = {
    Event.QUEUED: "Pris en charge par la passerelle le {when}",
    Event.DELIVERED: "Remis à {who} le {when}",
    Event.DEFERRED: "Remise à {who} différée le {when} ; la passerelle réessaiera",
    Event.BOUNCED: "Échec définitif de la remise à {who} le {when}",
    Event.FAILED: "Remise à {who} abandonnée le {when}",
    Event.DSN: "Avis de non-remise envoyé le {when}",
    Event.MDN: "Accusé de réception reçu de {who} le {when}",
    Event.DUPLICATE: "Doublon ignoré le {when}",
    Event.QUARANTINED: "Mis en quarantaine le {when} (signature invalide)",
}


@dataclass
class RecipientTimeline:
    address: str
    steps: list[Step] = field(default_factory=list)
    name: str = ""  # the directory's name for the address, else the address
    kind: str = ""  # local / peer / clear: which form of the message it was given
    protection: str = ""  # the policy word the gateway applied (sign+encrypt, end-to-end…)

    @property
    def protection_text(self) -> str:
        """What was done to this recipient's copy, in words (issue #15 item 5)."""
        signed = "sign" in self.protection or self.protection == "end-to-end"
        if self.kind == "local":
            return ("Signé, remis" if signed else "Remis") + \
                " chez votre opérateur sans quitter ses serveurs"
        if self.kind == "clear":
            return ("Signé, transmis" if signed else "Transmis") + " dans l’espace de " \
                "confiance (TLS mutuel), sans chiffrement : pas de certificat publié"
        if self.kind == "peer" and ("encrypt" in self.protection
                                    or self.protection == "end-to-end"):
            return "Chiffré de bout en bout (S/MIME)" + (", signé" if signed else "")
        if self.kind == "peer":
            return ("Signé, transmis" if signed else "Transmis") + \
                " dans l’espace de confiance (TLS mutuel)"
        return ""

    def sentence(self, step: Step) -> str:
        """``step`` as a sentence ("Remis à Paul Durand le 03/12 à 21:09"), with the server's
        words (never its bare code) when it said why."""
        template = SENTENCES.get(step.event, step.label + " le {when}")
        text = template.format(who=self.name or self.address, when=short_datetime(step.at))
        reason = parse_reply(step.detail).text if step.event in _FAILURES else ""
        return f"{text} : {reason}." if reason else f"{text}."

    @property
    def state(self) -> Step | None:
        """The last step that says where the delivery stands."""
        meaningful = [s for s in self.steps if s.event != Event.MDN]
        return meaningful[-1] if meaningful else None

    @property
    def receipt(self) -> bool:
        return any(s.event == Event.MDN for s in self.steps)


def timeline(session: Session, message_id: str, mailbox: str) -> list[RecipientTimeline]:
    """Per recipient, the steps of the message ``message_id`` sent from ``mailbox``."""
    if not message_id:
        return []
    queue_ids = set(session.scalars(select(DeliveryEvent.queue_id).where(
        DeliveryEvent.message_key == message_id[:250], DeliveryEvent.event == Event.QUEUED,
        DeliveryEvent.recipient == mailbox.lower(),
        (DeliveryEvent.detail == RecipientKind.SENT.value) | of_kinds(RecipientKind.SENT))))
    if not queue_ids:
        return []
    rows = session.scalars(select(DeliveryEvent).where(
        DeliveryEvent.queue_id.in_(queue_ids)).order_by(DeliveryEvent.id))
    found: OrderedDict[str, RecipientTimeline] = OrderedDict()
    for row in rows:
        if row.detail.split(" ", 1)[0] in _HIDDEN_KINDS:
            continue
        entry = found.setdefault(row.recipient, RecipientTimeline(row.recipient))
        if row.event == Event.QUEUED:
            entry.kind, _, entry.protection = row.detail.partition(" ")
        entry.steps.append(Step(row.at, row.event, _detail(row.event, row.detail)))
    names = display_names(session, list(found))
    for entry in found.values():
        entry.name = names.get(entry.address, entry.address)
    return list(found.values())


def _detail(event: str, detail: str) -> str:
    """The recorded detail without the recipient kind the gateway prefixes to it."""
    kind, _, rest = detail.partition(" ")
    if kind in (RecipientKind.LOCAL, RecipientKind.PEER, RecipientKind.CLEAR):
        detail = rest
    if event == Event.QUEUED:
        return ""
    return detail.strip()


# ---------------------------------------------------------------------- notices
NOTICE_TROUBLE = 3  # failed attempts in a row before the holder is told (issue #15 item 6)


@dataclass(frozen=True)
class NoticeTrouble:
    """Notices to a usual address that keep failing since the last one that went out."""

    failures: int
    since: datetime
    reason: str


def notice_trouble(session: Session, usual_email: str, since: datetime) -> NoticeTrouble | None:
    """The failures of notices to ``usual_email`` after ``since`` and after the last notice
    that was delivered, when there are at least ``NOTICE_TROUBLE``; else None."""
    if not usual_email:
        return None
    rows = session.scalars(select(DeliveryEvent).where(
        DeliveryEvent.recipient == usual_email.lower(), DeliveryEvent.at >= since,
        of_kinds(RecipientKind.NOTIFY), DeliveryEvent.event.in_([*ATTEMPTS, Event.FAILED]))
        .order_by(DeliveryEvent.id.desc()).limit(50)).all()
    failed: list[DeliveryEvent] = []
    for row in rows:  # newest first, until the last success
        if row.event == Event.DELIVERED:
            break
        failed.append(row)
    if len(failed) < NOTICE_TROUBLE:
        return None
    reason = parse_reply(failed[0].detail.partition(" ")[2]).text
    return NoticeTrouble(len(failed), failed[-1].at, reason[:200])


# ---------------------------------------------------------------------- operator pages
@dataclass(frozen=True)
class QueueEntry:
    """A message still in the queue, without content: envelope, size, recipients' states."""

    id: str
    created_at: datetime
    origin: str
    sender: str
    size: int
    recipients: list[tuple[str, str, str, int, str]]  # address, kind, state, attempts, reason


def queue(session: Session, limit: int = 200) -> list[QueueEntry]:
    """The queue, oldest first (``spool.queue.pending``)."""
    return [QueueEntry(m.id, m.created_at, m.origin.value, m.envelope_from or "<>", m.size,
                       [(r.address, r.kind.value, r.state.value, r.attempts,
                         f"{r.last_code} {r.last_reason}".strip()[:200])
                        for r in m.recipients])
            for m in q.pending(session, limit)]


def depth(session: Session) -> int:
    return q.depth(session)


def retry(session: Session, queue_id: str) -> int:
    """Make the message's waiting deliveries due now; how many."""
    return q.retry_now(session, queue_id)


def remove(session: Session, queue_id: str) -> bool:
    return q.remove(session, queue_id)


def last_peer_event(session: Session, domain: str) -> DeliveryEvent | None:
    """The newest delivery attempt towards a peer domain (what its TLS gave last)."""
    return session.scalars(select(DeliveryEvent).where(
        DeliveryEvent.recipient.like(f"%@{domain}"),
        DeliveryEvent.event.in_(ATTEMPTS), of_kinds(RecipientKind.PEER, RecipientKind.CLEAR),
    ).order_by(DeliveryEvent.id.desc()).limit(1)).first()


def recent_events(session: Session, since: datetime) -> dict[str, int]:
    """Timeline events since ``since``, counted by kind of event."""
    from sqlalchemy import func

    rows = session.execute(select(DeliveryEvent.event, func.count()).where(
        DeliveryEvent.at >= since).group_by(DeliveryEvent.event))
    return {event: int(count) for event, count in rows}


def peer_health(session: Session, peers: dict[str, str], since: datetime
                ) -> tuple[dict[str, Any], dict[str, int], dict[str, Any]]:
    """For the operator's "Pairs" page (issue #20), ``peers`` being domain → whitelist DN:
    each domain's last probe result (``peers.results.ProbeResult``), its failed probes in a
    row, and its traffic since ``since`` (``peers.traffic.Traffic``)."""
    return (health.latest(session, list(peers)), health.failures_in_a_row(session),
            traffic.traffic(session, peers, since))


def peer_failure_label(failure: str) -> str:
    """A probe's failure code in French (``peers.results.FAILURE_FR``)."""
    try:
        return FAILURE_FR[Failure(failure)]
    except ValueError:
        return failure
