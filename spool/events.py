"""The words the gateway writes and the webmail and the ``mss`` commands read: the delivery
timeline's events and their detail, the relay's audit actions. One home, so that a reader
keys on a name the writer cannot rename under it.

**The timeline** (``DeliveryEvent``): one row per step and recipient. Its ``event`` is an
``Event``; its ``detail`` starts with the recipient's kind (``RecipientKind``) for the rows
the queue writes itself — ``queued`` (then the protection applied, e.g. ``peer
sign+encrypt``) and the outcomes of an attempt (then the reply code and reason, e.g. ``local
250``) — while ``dsn``, ``mdn`` and ``duplicate`` carry only their own words (a status, a
disposition, the queue id that delivered). Codes and reasons only, never content.

**The audit actions** (``core.audit``) of the SMTP listeners that other parts count: accepted
submissions, messages received from peers (actor: the peer's DN) and refusals per channel
(target: the step, outcome: the error's code).
"""

from __future__ import annotations

import enum

from sqlalchemy import ColumnElement, or_

from spool.models import DeliveryEvent, RecipientKind


class Event(enum.StrEnum):
    """What happened to one recipient of one message (``DeliveryEvent.event``)."""

    QUEUED = "queued"  # written with the message, before 250
    DELIVERED = "delivered"
    DEFERRED = "deferred"  # a temporary failure (or not attempted): tried again later
    BOUNCED = "bounced"  # permanent failure or expiry: a DSN goes to the sender
    FAILED = "failed"  # given up without DSN (the Sent copy, notices, reports)
    DSN = "dsn"  # a DSN went to the sender for this recipient
    MDN = "mdn"  # a receipt was sent on this recipient's behalf
    DUPLICATE = "duplicate"  # another queue entry delivers this (Message-ID, recipient)
    QUARANTINED = "quarantined"  # held for an operator (a relayed message's bad signature)


ATTEMPTS = (Event.DELIVERED, Event.DEFERRED, Event.BOUNCED)  # what a delivery attempt gave


def detail(kind: RecipientKind, *words: str) -> str:
    """A detail the queue writes: the recipient's kind, then ``words`` (empty ones kept as
    empty, stripped at the ends), at most the column's 500 characters."""
    return " ".join((kind.value, *words)).strip()[:500]


def of_kinds(*kinds: RecipientKind) -> ColumnElement[bool]:
    """Timeline rows whose detail names one of ``kinds``, alone (``detail(kind)`` with no
    words: a "queued" row without protection) or followed by more words."""
    return or_(*(clause for kind in kinds for clause in (
        DeliveryEvent.detail == kind.value, DeliveryEvent.detail.like(f"{kind.value} %"))))


class SmtpAction(enum.StrEnum):
    """The audit trail's actions of the SMTP listeners (``AuditRecord.action``)."""

    SUBMIT = "smtp.submit"  # accepted on a submission port (target: the queue id)
    RECEIVE = "smtp.relay.receive"  # accepted from a peer (actor: its normalised DN)
    SUBMISSION_REFUSE = "smtp.submission.refuse"
    RELAY_REFUSE = "smtp.relay.refuse"


REFUSALS = (SmtpAction.SUBMISSION_REFUSE, SmtpAction.RELAY_REFUSE)


def refusal(channel: str) -> SmtpAction:
    """The refusal action of a listener's channel (``submission`` or ``relay``).

    Raises:
        ValueError: another channel.
    """
    return SmtpAction(f"smtp.{channel}.refuse")
