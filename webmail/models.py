"""Tables of the webmail: server-side sessions and TOTP replay protection; what writing
needs (issue #17): messages held for their "Annuler" window, each person's undo delay and
their signature per mailbox.

A browser holds only an opaque random token in its cookie; the row is keyed by the token's
SHA-256, so a copy of the database does not yield usable cookies. Everything the webmail keeps
between requests (who is logged in, the registration wizard's data, a pending one-time code's
hash) lives in ``data``. Rows of an account can be listed ("sessions actives") and deleted
("déconnecter partout"); a row not seen for ``session_timeout_minutes`` is dead
(MSSanté SC.SSI/IE.58).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow


class WebSession(Base):
    """One browser session (see the module docstring)."""

    __tablename__ = "web_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256(token) hex
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    data: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    login_method: Mapped[str] = mapped_column(String(16), default="")  # card / email / sms / totp
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    remote_addr: Mapped[str] = mapped_column(String(45), default="")


class TotpUse(Base):
    """The last TOTP time step accepted for an account: a code is accepted once only
    (RFC 6238 §5.2), even from another browser."""

    __tablename__ = "totp_use"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True
    )
    last_step: Mapped[int] = mapped_column(Integer, default=0)


class HeldMessage(Base):
    """A message sent from the webmail, held until ``due_at`` so that "Annuler" can still
    bring it back (``webmail.mail.outbox``). ``raw`` is the message as it will be submitted
    (like the gateway's queue, the database holds it until it leaves) and is emptied once it
    has left or been taken back; the row then only says what happened, for the sender's
    banner, and is removed after a day. ``state``: held → sending → sent, or held →
    cancelled, or sending → failed (the message went back to Brouillons). A process takes a
    row by a conditional UPDATE with a lease (``lease_until``), so that several webmail
    processes never submit it twice; a lease left by a process that died is taken again."""

    __tablename__ = "held_message"
    __table_args__ = (UniqueConstraint("account_id", "compose_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    # One per compose page: a second click on "Envoyer" finds the same row.
    compose_id: Mapped[str] = mapped_column(String(40))
    login: Mapped[str] = mapped_column(String(254))
    box_id: Mapped[int] = mapped_column(Integer)  # the mailbox the page was opened in
    sender: Mapped[str] = mapped_column(String(254))  # the From mailbox (MAIL FROM)
    recipients: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of addresses
    message_id: Mapped[str] = mapped_column(String(250), default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    summary: Mapped[str] = mapped_column(Text, default="{}")  # JSON: counts, sizes, choices
    # What follows the sending, as IMAP names in the user's own session: the compose page's
    # draft removed, the message replied to marked \\Answered, Sent searched after a crash.
    drafts_folder: Mapped[str] = mapped_column(String(400), default="")
    draft_uid: Mapped[int | None] = mapped_column(Integer)
    reply_folder: Mapped[str] = mapped_column(String(400), default="")
    reply_uid: Mapped[int | None] = mapped_column(Integer)
    sent_folder: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    state: Mapped[str] = mapped_column(String(16), default="held", index=True)
    lease_owner: Mapped[str] = mapped_column(String(80), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    queue_id: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(600), default="")  # French, for the banner
    notified: Mapped[bool] = mapped_column(Boolean, default=False)  # the sender saw it


class WritingPreference(Base):
    """A person's choices for writing (Mon compte, Rédaction): the undo delay in seconds
    (None: the operator's ``undo_send_seconds``)."""

    __tablename__ = "writing_preference"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    undo_seconds: Mapped[int | None] = mapped_column(Integer)


class MailSignature(Base):
    """A person's signature for one mailbox they may send as (their own, or an organisational
    one: each delegate signs in their own name). Plain text, bounded
    (``webmail.mail.writing.SIGNATURE_MAX``)."""

    __tablename__ = "mail_signature"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailbox.id", ondelete="CASCADE"), primary_key=True)
    text: Mapped[str] = mapped_column(Text, default="")


class ReadingPreference(Base):
    """A person's choices for reading (issue #17): whether the message lists group messages by
    conversation (``webmail.mail.conversations``). No row: one line per message."""

    __tablename__ = "reading_preference"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    conversations: Mapped[bool] = mapped_column(Boolean, default=False)
