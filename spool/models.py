"""The durable state of the queue: the messages, the per-recipient delivery timeline, the
de-duplication ledger. The gateway writes it; the webmail and the ``mss`` commands read it.

- ``QueuedMessage``: one accepted message and its envelope sender, in the forms each kind of
  recipient receives (built by ``gateway.accept.checks``): ``raw_local`` for local mailboxes and the
  sender's ``Sent`` copy (signed, verified and stamped), ``raw_peer`` for peer operators
  (signed and/or encrypted as the policy asks), ``raw_clear`` for a peer recipient without
  certificate in MSSanté mode (signed only, over the mutually authenticated TLS hop).
- ``QueueRecipient``: one delivery to do, with its state, attempts, next attempt and lease.
  The sender's copy into ``Sent`` and the notification to a usual address are recipients of
  their own kinds, so that they are retried like any delivery and never block the others.
- ``DeliveryEvent``: the timeline (``spool.events.Event``: queued, delivered, deferred,
  bounced, dsn, mdn…) per recipient, for the webmail and operators; it outlives the queue rows.
- ``DeliveredKey``: one row per (Message-ID, recipient) delivered, written in the transaction
  that marks the delivery done: a second copy of the same message (a client retrying after a
  lost ``250``, a crash before the commit) is recognised and not delivered twice.

Nothing here commits (CONVENTIONS.md, 6); no subject or body is ever copied out of the raw
message columns.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, UTCDateTime, utcnow

_ID = BigInteger().with_variant(Integer(), "sqlite")  # rowid alias on SQLite


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Plain strings, as in trust_space.models: no native PG enum types.
    return Enum(cls, name=name, native_enum=False, length=32,
                values_callable=lambda e: [m.value for m in e])


class RecipientKind(enum.StrEnum):
    LOCAL = "local"  # LMTP into the mailbox's INBOX
    SENT = "sent"  # LMTP into the sender's Sent folder (once per message)
    PEER = "peer"  # SMTP with mutual TLS to the peer operator's relay
    CLEAR = "clear"  # the same, signed only: peer recipient without certificate (MSSanté mode)
    NOTIFY = "notify"  # a notice to a usual (non-secure) address through the smarthost


class RecipientState(enum.StrEnum):
    QUEUED = "queued"  # waiting for next_attempt_at
    DELIVERING = "delivering"  # claimed by a worker until lease_until
    DELIVERED = "delivered"
    BOUNCED = "bounced"  # permanent failure or expiry: a DSN went to the sender
    FAILED = "failed"  # given up without DSN (notifications, DSNs themselves)
    QUARANTINED = "quarantined"  # held for an operator (bad inbound signature, quarantine mode)


class Origin(enum.StrEnum):
    SUBMISSION = "submission"
    RELAY = "relay"  # from a peer operator
    DSN = "dsn"
    MDN = "mdn"


class QueuedMessage(Base):
    __tablename__ = "queue_message"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the queue id given in 250
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    origin: Mapped[Origin] = mapped_column(_enum(Origin, "queue_origin"))
    envelope_from: Mapped[str] = mapped_column(String(254), default="")  # "" = null sender
    message_key: Mapped[str] = mapped_column(String(250), index=True)  # the dedup key
    submitter: Mapped[str] = mapped_column(String(254), default="")  # login or peer DN
    size: Mapped[int] = mapped_column(Integer)
    raw_local: Mapped[bytes | None] = mapped_column(LargeBinary)
    raw_peer: Mapped[bytes | None] = mapped_column(LargeBinary)
    raw_clear: Mapped[bytes | None] = mapped_column(LargeBinary)

    recipients: Mapped[list[QueueRecipient]] = relationship(
        back_populates="message", cascade="all, delete-orphan", passive_deletes=True)


class QueueRecipient(Base):
    __tablename__ = "queue_recipient"
    __table_args__ = (Index("ix_queue_recipient_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    queue_id: Mapped[str] = mapped_column(
        ForeignKey("queue_message.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(254))
    kind: Mapped[RecipientKind] = mapped_column(_enum(RecipientKind, "queue_rcpt_kind"))
    state: Mapped[RecipientState] = mapped_column(_enum(RecipientState, "queue_rcpt_state"),
                                                  default=RecipientState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # True when a worker took this row over from one that died while delivering it: the
    # delivery may have happened, the new worker checks the mailbox before delivering again.
    in_doubt: Mapped[bool] = mapped_column(Boolean, default=False)
    last_code: Mapped[str] = mapped_column(String(16), default="")
    last_reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    message: Mapped[QueuedMessage] = relationship(back_populates="recipients")


class DeliveryEvent(Base):
    __tablename__ = "delivery_event"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    queue_id: Mapped[str] = mapped_column(String(32), index=True)
    message_key: Mapped[str] = mapped_column(String(250), index=True)
    recipient: Mapped[str] = mapped_column(String(254), index=True)
    event: Mapped[str] = mapped_column(String(16))  # a spool.events.Event
    detail: Mapped[str] = mapped_column(String(500), default="")  # spool.events.detail: no content


class DeliveredKey(Base):
    __tablename__ = "delivered_key"
    __table_args__ = (UniqueConstraint("message_key", "recipient"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    message_key: Mapped[str] = mapped_column(String(250))
    recipient: Mapped[str] = mapped_column(String(270))  # address, or "Sent:" + address
    queue_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
