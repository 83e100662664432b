"""Undo send: a message sent from the webmail waits in ``held_message`` for the person's delay
(Mon compte, « Rédaction ») before it is submitted to the gateway, so that « Annuler » can
still bring it back into the compose form.

Once due it is submitted exactly once, whether or not the browser is still open: a thread of
every webmail process (``Outbox.start``, from ``webmail.service``) takes due rows. Taking a row
is one conditional UPDATE (held → sending, with a lease): of several processes, and of the
thread and an « Annuler » racing it, exactly one wins. A row stays in the database until it has
left, so a webmail restarted after a stop or a crash sends at start what fell due meanwhile. A
lease left by a process that died while submitting is taken again after ``LEASE``; the
message's Sent copy (made by the gateway when it accepts it) is looked for first, so that a
message the gateway already took is not sent twice.

A temporary refusal (4xx, gateway unreachable) is tried again with a growing delay; a final
refusal, or ``MAX_ATTEMPTS``, puts the message back into Brouillons and tells the sender on
their next mail page (``undo``). Every step is audited: ``mail.send.held``,
``mail.send.cancelled``, ``mail.send`` (ok / refused / duplicate).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from core import audit
from core.db import Database, utcnow
from mailstore.errors import MailstoreError
from mailstore.imap import MailboxSession
from webmail.mail.drafting import COMPOSE_HEADER
from webmail.mail.submit import SubmissionRefused, Submitter
from webmail.models import HeldMessage

log = logging.getLogger("mss.webmail.outbox")

HELD, SENDING, SENT, CANCELLED, FAILED = "held", "sending", "sent", "cancelled", "failed"
DRAFTS = "Drafts"  # the person's own Brouillons, in their session (mailbox of last resort)
LEASE = timedelta(seconds=180)  # longer than a submission can take (Submitter.timeout)
POLL_SECONDS = 1.0
RETRY_DELAYS = (5, 15, 30, 60, 120, 300, 600, 900)  # seconds, after temporary refusals
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
KEEP_FINISHED = timedelta(days=1)  # then the row (already without its message) goes

ImapOpener = Callable[[str], AbstractContextManager[MailboxSession]]


def _changed(result: Any) -> int:
    """Rows an UPDATE or DELETE changed (a CursorResult's rowcount)."""
    return int(getattr(result, "rowcount", 0) or 0)


def new_owner() -> str:
    """A name for this process's leases (host, pid, random: unique across restarts)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Hold:
    """A message to hold: its envelope and bytes, and what follows its sending."""

    account_id: int
    compose_id: str
    login: str
    box_id: int
    sender: str
    recipients: list[str]
    message_id: str
    raw: bytes
    summary: dict[str, Any] = field(default_factory=dict)
    drafts_folder: str = ""
    draft_uid: int | None = None
    reply_folder: str = ""
    reply_uid: int | None = None
    sent_folder: str = ""


@dataclass(frozen=True)
class Outcome:
    """What became of one submission attempt."""

    state: str  # SENT, FAILED, HELD (to be tried again), or "" (another process had it)
    queue_id: str = ""
    message: str = ""  # French, for the sender


def hold(db: Database, item: Hold, delay: int, *, owner: str = "") -> tuple[int, bool]:
    """Keep ``item`` until ``delay`` seconds from now; (row id, True) — or, when this compose
    page already sent (a double click, a second tab), the existing row and False. With
    ``owner``, the row is taken by that owner at once (a delay of 0: the request submits it
    itself)."""
    now = utcnow()
    values = dict(account_id=item.account_id, compose_id=item.compose_id, login=item.login,
                  box_id=item.box_id, sender=item.sender,
                  recipients=json.dumps(item.recipients), message_id=item.message_id,
                  raw=item.raw, summary=json.dumps(item.summary),
                  drafts_folder=item.drafts_folder, draft_uid=item.draft_uid,
                  reply_folder=item.reply_folder, reply_uid=item.reply_uid,
                  sent_folder=item.sent_folder, created_at=now,
                  due_at=now + timedelta(seconds=delay), state=SENDING if owner else HELD,
                  lease_owner=owner, lease_until=now + LEASE if owner else None,
                  attempts=1 if owner else 0, queue_id="", outcome="", notified=False)
    try:
        with db.transaction() as session:
            existing = session.scalar(select(HeldMessage).where(
                HeldMessage.account_id == item.account_id,
                HeldMessage.compose_id == item.compose_id))
            if existing is not None:
                if existing.state in (HELD, SENDING, SENT):
                    return existing.id, False
                session.delete(existing)  # cancelled or failed: this is a new attempt
                session.flush()
            row = HeldMessage(**values)
            session.add(row)
            session.flush()
            _audit(session, row, "mail.send.held", "ok", delay=delay)
            return row.id, True
    except IntegrityError:  # the same page's other request inserted first
        with db.read() as session:
            found = session.scalar(select(HeldMessage.id).where(
                HeldMessage.account_id == item.account_id,
                HeldMessage.compose_id == item.compose_id))
        if found is None:
            raise
        return int(found), False


def take_back(db: Database, held_id: int, account_id: int) -> HeldMessage | None:
    """The held message, still waiting, of this account (None: unknown, another person's,
    or too late). Nothing changes: see ``cancel``."""
    with db.read() as session:
        row = session.get(HeldMessage, held_id)
        if row is None or row.account_id != account_id or row.state != HELD:
            return None
        session.expunge(row)
        return row


def cancel(db: Database, held_id: int, account_id: int, restored_uid: int | None) -> bool:
    """Stop the held message from leaving (held → cancelled), its bytes forgotten once they
    are back in Brouillons (``restored_uid``). False: too late (taken or sent meanwhile)."""
    with db.transaction() as session:
        done = _changed(session.execute(update(HeldMessage).where(
            HeldMessage.id == held_id, HeldMessage.account_id == account_id,
            HeldMessage.state == HELD).values(
            state=CANCELLED, raw=b"", finished_at=utcnow(), notified=True,
            draft_uid=restored_uid)))
        if done == 1:
            row = session.get(HeldMessage, held_id)
            assert row is not None
            _audit(session, row, "mail.send.cancelled", "ok", restored_uid=restored_uid)
        return done == 1


def status(db: Database, held_id: int, account_id: int) -> HeldMessage | None:
    """The row (without its bytes) of this account's held message, None when not theirs."""
    with db.read() as session:
        row = session.get(HeldMessage, held_id)
        if row is None or row.account_id != account_id:
            return None
        session.expunge(row)
        return row


def mark_notified(db: Database, ids: list[int]) -> None:
    """The sender has been shown how these ended."""
    if ids:
        with db.transaction() as session:
            session.execute(update(HeldMessage).where(HeldMessage.id.in_(ids))
                            .values(notified=True))


def pending_for(db: Database, account_id: int, *, since: timedelta = timedelta(hours=1)
                ) -> list[HeldMessage]:
    """This account's messages still waiting or being sent, and those that ended recently
    without the sender having seen it — oldest first, without their bytes."""
    now = utcnow()
    with db.read() as session:
        rows = list(session.scalars(select(HeldMessage).where(
            HeldMessage.account_id == account_id,
            (HeldMessage.state.in_((HELD, SENDING)))
            | ((HeldMessage.state.in_((SENT, FAILED))) & (HeldMessage.notified.is_(False))
               & (HeldMessage.finished_at >= now - since))).order_by(HeldMessage.id)))
        for row in rows:
            session.expunge(row)
        return rows


def _audit(session: Any, row: HeldMessage, action: str, outcome: str, **details: Any) -> None:
    summary = json.loads(row.summary or "{}")
    audit.record(session, actor=row.login, action=action, target=row.sender, outcome=outcome,
                 request={"held": row.id, "recipients": len(json.loads(row.recipients)),
                          **summary, **details})


class Outbox:
    """Submits held messages once due (see the module docstring)."""

    def __init__(self, db: Database, submitter: Callable[[], Submitter], imap: ImapOpener,
                 *, owner: str | None = None) -> None:
        self.db = db
        self.submitter = submitter
        self.imap = imap
        self.owner = owner or new_owner()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        """Send what fell due while no webmail ran, then keep watching."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="webmail-outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def wake(self) -> None:
        """Look now (a message was just held)."""
        self._wake.set()

    def _loop(self) -> None:
        rounds = 0
        while not self._stop.is_set():
            try:
                self.run_due()
                if rounds % 600 == 0:
                    self.forget_finished()
            except Exception:  # the thread must outlive a database or store hiccup
                log.exception("envoi différé : tour en échec")
            rounds += 1
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    # ------------------------------------------------------------------ the work
    def run_due(self) -> int:
        """Submit every due message this process can take; how many it handled."""
        handled = 0
        for held_id, was_sending in self._due():
            if self._claim(held_id, was_sending):
                self.submit(held_id, recovering=was_sending)
                handled += 1
        return handled

    def _due(self) -> Iterator[tuple[int, bool]]:
        now = utcnow()
        with self.db.read() as session:
            rows = session.execute(select(HeldMessage.id, HeldMessage.state).where(
                ((HeldMessage.state == HELD) & (HeldMessage.due_at <= now))
                | ((HeldMessage.state == SENDING) & (HeldMessage.lease_until < now)))
                .order_by(HeldMessage.due_at).limit(50)).all()
        for held_id, state in rows:
            yield held_id, state == SENDING

    def _claim(self, held_id: int, was_sending: bool) -> bool:
        now = utcnow()
        condition = (HeldMessage.lease_until < now) if was_sending else \
            (HeldMessage.due_at <= now)
        with self.db.transaction() as session:
            return _changed(session.execute(update(HeldMessage).where(
                HeldMessage.id == held_id,
                HeldMessage.state == (SENDING if was_sending else HELD), condition).values(
                state=SENDING, lease_owner=self.owner, lease_until=now + LEASE,
                attempts=HeldMessage.attempts + 1))) == 1

    def submit(self, held_id: int, *, recovering: bool = False,
               retry: bool = True) -> Outcome:
        """Submit the row this process holds the lease of. ``recovering``: a lease taken back
        from a process that died (look in Sent first). ``retry=False``: a temporary refusal is
        final too (the request that waits for the answer shows it on the form)."""
        with self.db.read() as session:
            row = session.get(HeldMessage, held_id)
            if row is None or row.state != SENDING or row.lease_owner != self.owner:
                return Outcome("")
            session.expunge(row)
        if recovering and self._already_sent(row):
            return self._finish_sent(row, "", duplicate=True)
        try:
            queue_id = self.submitter().send(row.login, row.sender,
                                             json.loads(row.recipients), row.raw)
        except SubmissionRefused as exc:
            return self._refused(row, exc, retry=retry)
        return self._finish_sent(row, queue_id)

    def _already_sent(self, row: HeldMessage) -> bool:
        if not (row.sent_folder and row.message_id):
            return False
        try:
            with self.imap(row.login) as session:  # the Sent copies of its day and after
                return bool(session.uids_with_header(
                    row.sent_folder, "Message-ID", row.message_id,
                    since=(row.created_at - timedelta(days=1)).date()))
        except MailstoreError:
            return False

    def _finish_sent(self, row: HeldMessage, queue_id: str, *, duplicate: bool = False
                     ) -> Outcome:
        count = len(json.loads(row.recipients))
        text = (f"Message envoyé à {count} destinataire{'s' if count > 1 else ''}. Sa copie "
                "est dans « Messages envoyés ».")
        with self.db.transaction() as session:
            done = _changed(session.execute(update(HeldMessage).where(
                HeldMessage.id == row.id, HeldMessage.lease_owner == self.owner,
                HeldMessage.state == SENDING).values(
                state=SENT, raw=b"", queue_id=queue_id[:64], finished_at=utcnow(),
                lease_until=None, outcome=text)))
            if done:
                _audit(session, row, "mail.send", "duplicate" if duplicate else "ok",
                       queue_id=queue_id, size=len(row.raw))
        self._tidy_after_send(row)
        return Outcome(SENT, queue_id, text)

    def _tidy_after_send(self, row: HeldMessage) -> None:
        """The compose page's drafts go; the message replied to is marked answered."""
        try:
            with self.imap(row.login) as session:
                if row.drafts_folder and (row.draft_uid is not None or row.compose_id):
                    drafts = set(session.uids_with_header(
                        row.drafts_folder, COMPOSE_HEADER, row.compose_id,
                        since=(row.created_at - timedelta(days=1)).date()))
                    drafts |= {row.draft_uid} if row.draft_uid is not None else set()
                    if drafts:
                        session.expunge(row.drafts_folder, sorted(drafts))
                if row.reply_uid is not None and row.reply_folder:
                    session.set_flags(row.reply_folder, [row.reply_uid], ["\\Answered"])
        except MailstoreError as exc:
            log.warning("envoi différé %s : brouillon ou marque « répondu » non mis à jour "
                        "(%s)", row.id, exc.code)

    def _refused(self, row: HeldMessage, exc: SubmissionRefused, *, retry: bool) -> Outcome:
        temporary = not exc.reply or exc.reply.startswith("4")
        attempts = row.attempts
        if retry and temporary and attempts < MAX_ATTEMPTS:
            delay = RETRY_DELAYS[min(attempts - 1, len(RETRY_DELAYS) - 1)]
            with self.db.transaction() as session:
                session.execute(update(HeldMessage).where(
                    HeldMessage.id == row.id, HeldMessage.lease_owner == self.owner).values(
                    state=HELD, lease_until=None, lease_owner="",
                    due_at=utcnow() + timedelta(seconds=delay)))
                _audit(session, row, "mail.send", "deferred", reply=exc.reply,
                       attempts=attempts)
            return Outcome(HELD, message=exc.message)
        return self._fail(row, exc, to_drafts=retry)

    def _fail(self, row: HeldMessage, exc: SubmissionRefused, *, to_drafts: bool) -> Outcome:
        """A final refusal: with ``to_drafts`` the message goes back to Brouillons (the
        sender is no longer on the form); without, the form shows it again."""
        restored = None
        text = exc.message
        if to_drafts:
            back = self._back_to_drafts(row)
            if back is None:  # not lost: the row keeps it; the lease ends, tried again
                return Outcome("", message=text)
            restored, where = back
            text = (f"Un message n’est pas parti : {exc.message} Il a été remis dans "
                    f"« Brouillons »{where}.")
            if where:
                restored = None  # not in the mailbox the banner's link opens
        with self.db.transaction() as session:
            session.execute(update(HeldMessage).where(
                HeldMessage.id == row.id, HeldMessage.lease_owner == self.owner).values(
                state=FAILED, raw=b"", finished_at=utcnow(), lease_until=None,
                outcome=text[:600], draft_uid=restored, notified=not to_drafts))
            _audit(session, row, "mail.send", "refused", reply=exc.reply,
                   restored_uid=restored)
        return Outcome(FAILED, message=text)

    def _back_to_drafts(self, row: HeldMessage) -> tuple[int | None, str] | None:
        """Append the message to the Brouillons of the mailbox it was written in, else (a
        delegation ended meanwhile) to the person's own: its UID and where, for the notice;
        None when neither could be reached."""
        for folder, where in ((row.drafts_folder, ""), (DRAFTS, " de votre boîte personnelle")):
            try:
                with self.imap(row.login) as session:
                    uid = session.append(folder, row.raw, ["\\Draft", "\\Seen"])
                    if row.draft_uid is not None and folder == row.drafts_folder:
                        try:
                            session.expunge(folder, [row.draft_uid])
                        except MailstoreError:
                            pass  # the page's draft stays beside it: nothing is lost
                    return uid, where
            except MailstoreError as exc:
                log.warning("envoi différé %s refusé, et %s injoignable (%s)", row.id, folder,
                            exc.code)
        return None

    def forget_finished(self, now: datetime | None = None) -> int:
        """Remove rows that ended more than ``KEEP_FINISHED`` ago (their bytes already
        gone); how many."""
        limit = (now or utcnow()) - KEEP_FINISHED
        with self.db.transaction() as session:
            return _changed(session.execute(delete(HeldMessage).where(
                HeldMessage.state.in_((SENT, CANCELLED, FAILED)),
                HeldMessage.finished_at < limit)))
