"""The durable queue (DESIGN.md step 4-5): enqueue before ``250``, claim, finish, administer.

**Durable before 250.** ``enqueue`` runs inside the DATA transaction; the SMTP handler answers
``250 2.0.0 Ok: queued as <id>`` only after that transaction committed (SQLite WAL with
``synchronous=FULL``, or a PostgreSQL commit: the message and its envelope are on disk).

**Claiming.** A worker claims due recipients in one short transaction: rows that are QUEUED
and due, or DELIVERING whose lease expired (their worker died). On PostgreSQL the candidate
rows are read ``FOR UPDATE SKIP LOCKED``, so concurrent workers of several processes take
disjoint rows without waiting; on SQLite every transaction starts with ``BEGIN IMMEDIATE``
(``core.db``), so the claim is serialised (the gateway's processes queue for that lock on a
file lock, ``writing``; a poll that finds nothing due only reads). Either way the UPDATE
repeats the due condition and marks the rows with a unique lease token, and only the rows
carrying that token are returned: a row is never handed to two workers at once. While a batch
is out its worker renews the lease every third of it (``renew``), so only a dead or stalled
process loses its rows; and a stalled one that wakes up records nothing over the worker that
took them over (``still_held``: outcomes are written only for rows still carrying the claim's
token). When one of the accepting process's workers is idle, the DATA transaction itself
writes the rows claimed for it (``enqueue``'s ``hold``: the same lease, attempt and keys) and
the message is handed to that worker in memory once committed: no claim transaction, no
wake-up, on the path from ``250`` to the mailbox; if that process dies first, the lease
expires and the rows are taken over in doubt like any claim's.

**At-least-once, de-duplicated per (Message-ID, recipient).** When a local delivery is claimed,
its key (Message-ID, recipient) is reserved in ``DeliveredKey`` (unique) for that queue entry,
in the claim transaction; a twin entry (a client that sent again after a lost ``250``) finds
the key taken and is closed as a duplicate without delivering — even when both are claimed at
the same moment by two processes, since the unique index makes the second insert wait for the
first. A final failure releases the key. The one window left is a crash after the mail store
took the message and before the delivery was recorded: the row comes back with ``in_doubt``
set, and the worker looks for the Message-ID in the mailbox before delivering again
(``gateway.deliver.workers``). The same flag marks a row deferred because the mail store went silent
after taking the data (``mailstore.lmtp``: a Dovecot process that died between two recipients).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.orm import Session

from core.db import Database, Executor, utcnow
from spool.events import Event, detail
from spool.models import (
    DeliveredKey,
    DeliveryEvent,
    Origin,
    QueuedMessage,
    QueueRecipient,
    RecipientKind,
    RecipientState,
)

MAX_BACKOFF = 3600.0
_SQLITE_WRITERS = threading.Lock()
PENDING = (RecipientState.QUEUED, RecipientState.DELIVERING)
_tokens = itertools.count()


@contextmanager
def writing(db: Database) -> Iterator[Session]:
    """``db.transaction()`` for the gateway's writes. On SQLite the gateway's writers queue,
    in this process on a lock and between its processes on a file lock (``_writers``), instead
    of SQLite's busy handler, which sleeps 1, 2, 5 … 100 ms between tries: under load a
    process could lose the write lock to the other's writers for seconds (issue #19, the
    queue's tail). The webmail and the commands still meet the busy handler."""
    if db.dialect != "sqlite":
        with db.transaction() as session:
            yield session
        return
    with _writers(db), db.transaction() as session:
        yield session


@contextmanager
def appending(db: Database) -> Iterator[Connection]:
    """``writing`` as a bare connection (``Database.appending``), for Core inserts."""
    if db.dialect != "sqlite":
        with db.appending() as conn:
            yield conn
        return
    with _writers(db), db.appending() as conn:
        yield conn


@contextmanager
def _writers(db: Database) -> Iterator[None]:
    """This process's writer lock, then ``flock`` on ``<database>.writers``, opened for each
    hold (a few microseconds; nothing stays open, and no descriptor is shared across
    ``fork``). The kernel wakes a waiting process as soon as the lock is released."""
    path = db.engine.url.database
    with _SQLITE_WRITERS:
        if not path or path == ":memory:" or path.startswith("file:"):
            yield
            return
        fd = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def new_queue_id() -> str:
    """A short, time-ordered, unguessable queue id (hex)."""
    return f"{int(time.time() * 1000):011X}{secrets.token_hex(4).upper()}"


def backoff(attempts: int, base: float) -> float:
    """Seconds before attempt ``attempts + 1``: base, 2×base, 4×base … capped at one hour."""
    return float(min(base * (2 ** max(attempts - 1, 0)), MAX_BACKOFF))


def dedup_key(kind: RecipientKind, address: str) -> str:
    """The recipient part of the de-duplication key (the Sent copy is its own delivery)."""
    return f"Sent:{address}" if kind is RecipientKind.SENT else address


_INSERT_MESSAGE = insert(QueuedMessage)
_INSERT_RECIPIENT = insert(QueueRecipient)
_INSERT_EVENT = insert(DeliveryEvent)


@dataclass(frozen=True)
class Hold:
    """``enqueue`` hands the message straight to a delivery worker of this process: its rows
    are written already claimed under ``token`` (see ``lease_token``) for ``lease_seconds``."""

    token: str
    lease_seconds: float


def lease_token(owner: str) -> str:
    """A lease token no other claim carries (``owner``: the worker's host or name)."""
    return f"{owner}:{os.getpid()}:{next(_tokens)}"[:64]


def enqueue(session: Executor, *, queue_id: str, origin: Origin, envelope_from: str,
            message_key: str, submitter: str, size: int, local: bytes | None,
            peer: bytes | None = None, clear: bytes | None = None,
            recipients: Sequence[tuple[str, RecipientKind]],
            state: RecipientState = RecipientState.QUEUED, protection: str = "",
            quarantine_reason: str = "", hold: Hold | None = None) -> list[Claimed]:
    """Write a message and its recipients (not committed: the caller's transaction). Core
    inserts built once, not the ORM unit of work: this runs once per accepted message.
    ``protection`` (the policy word applied, e.g. ``sign+encrypt``, or ``end-to-end``) is
    recorded in each recipient's "queued" event for the sender's timeline; a message
    accepted in quarantine also gets a "quarantined" event with ``quarantine_reason`` (a
    code, e.g. ``bad_signature``).

    ``hold``: claim the message in the same transaction (what ``claim`` would write: the
    lease, the first attempt, the de-duplication keys reserved) and return it, for an idle
    worker of this process to deliver at once, without a claim transaction of its own (issue
    #19: submit → visible). Not for a quarantined message, nor when a twin entry holds one
    of its keys already (``claim`` closes such a duplicate): then the rows are queued as
    usual and ``[]`` is returned. Once committed the rows are leased like any claim's: a
    process that dies before delivering them loses them to another worker when the lease
    expires."""
    now, key = utcnow(), message_key[:250]
    session.execute(_INSERT_MESSAGE, {
        "id": queue_id, "created_at": now, "origin": origin, "envelope_from": envelope_from,
        "message_key": key, "submitter": submitter[:254], "size": size, "raw_local": local,
        "raw_peer": peer, "raw_clear": clear})
    if hold is not None and state is RecipientState.QUEUED:
        keys = {(key, dedup_key(kind, address)): queue_id for address, kind in recipients
                if kind in (RecipientKind.LOCAL, RecipientKind.SENT)}
        if any(owner != queue_id for owner in reserve_keys(session, keys, now).values()):
            hold = None
    else:
        hold = None
    held = {"state": RecipientState.DELIVERING, "attempts": 1, "lease_owner": hold.token,
            "lease_until": now + timedelta(seconds=hold.lease_seconds)} if hold else {}
    session.execute(_INSERT_RECIPIENT, [{
        "queue_id": queue_id, "address": address, "kind": kind, "state": state,
        "attempts": 0, "next_attempt_at": now, "in_doubt": False, "last_code": "",
        "last_reason": "", "updated_at": now, "lease_owner": None, "lease_until": None,
        **held} for address, kind in recipients])
    events = [(Event.QUEUED, protection)]
    if state is RecipientState.QUARANTINED:  # held for an operator (``retry_now`` releases)
        events.append((Event.QUARANTINED, quarantine_reason))
    session.execute(_INSERT_EVENT, [{
        "at": now, "queue_id": queue_id, "message_key": key, "recipient": address,
        "event": event, "detail": detail(kind, words)}
        for event, words in events for address, kind in recipients])
    if hold is None:
        return []
    rows = session.execute(select(QueueRecipient.id, QueueRecipient.address,
                                  QueueRecipient.kind)
                           .where(QueueRecipient.queue_id == queue_id)
                           .order_by(QueueRecipient.id))
    return [Claimed(queue_id, origin, envelope_from, key, now, local, peer, clear,
                    [Row(row_id, address, kind, 1, False) for row_id, address, kind in rows],
                    token=hold.token, claimed_at=now)]


# ---------------------------------------------------------------------- claiming
@dataclass(frozen=True)
class Row:
    id: int
    address: str
    kind: RecipientKind
    attempts: int
    in_doubt: bool


@dataclass
class Claimed:
    """A message and the recipients of it that this worker now holds."""

    queue_id: str
    origin: Origin
    envelope_from: str
    message_key: str
    created_at: datetime
    raw_local: bytes | None
    raw_peer: bytes | None
    raw_clear: bytes | None
    rows: list[Row] = field(default_factory=list)
    token: str = ""  # the lease token the rows carry while this worker holds them
    claimed_at: datetime = field(default_factory=utcnow)  # when that lease began


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(and_(QueueRecipient.state == RecipientState.QUEUED,
                    QueueRecipient.next_attempt_at <= now),
               and_(QueueRecipient.state == RecipientState.DELIVERING,
                    QueueRecipient.lease_until < now))


def claim(db: Database, owner: str, *, limit: int, lease_seconds: float,
          now: datetime | None = None, share: int = 1) -> list[Claimed]:
    """Take up to ``limit`` due recipients (see the module docstring), grouped by message.

    ``share``: how many workers share the backlog; this claim takes its share of the messages
    due, oldest first (at least one message, at most ``limit`` rows), so that a few messages
    arriving together go to several idle workers at once instead of one after the other to
    the first awake (issue #19: submit → visible), while a large backlog still goes in batches
    of ``limit`` (fewer commits)."""
    now = now or utcnow()
    token = lease_token(owner)
    if db.dialect == "sqlite":  # an empty poll reads, without the write lock (issue #19)
        with db.read() as session:
            if session.execute(select(QueueRecipient.id).where(_due(now)).limit(1)).first() \
                    is None:
                return []
    with writing(db) as session:
        query = (select(QueueRecipient.id, QueueRecipient.queue_id).where(_due(now))
                 .order_by(QueueRecipient.next_attempt_at, QueueRecipient.id)
                 .limit(limit * max(1, share)))
        if db.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = _share(session.execute(query).all(), share, limit)
        if not ids:
            return []
        session.execute(
            update(QueueRecipient).where(QueueRecipient.id.in_(ids), _due(now)).values(
                in_doubt=or_(QueueRecipient.in_doubt,
                             QueueRecipient.state == RecipientState.DELIVERING),
                state=RecipientState.DELIVERING, lease_owner=token,
                lease_until=now + timedelta(seconds=lease_seconds),
                attempts=QueueRecipient.attempts + 1, updated_at=now,
            ).execution_options(synchronize_session=False))
        return _load_claimed(session, token)


def _share(due: Sequence[Any], share: int, limit: int) -> list[int]:
    """The ids of the first ``ceil(messages / share)`` messages of ``due`` ((id, queue id)
    rows, oldest first), at most ``limit`` of them."""
    messages = list(dict.fromkeys(queue_id for _, queue_id in due))
    wanted = set(messages[:max(1, -(-len(messages) // max(1, share)))])
    return [row_id for row_id, queue_id in due if queue_id in wanted][:limit]


def renew(db: Database, tokens: Iterable[str], lease_seconds: float,
          now: datetime | None = None) -> int:
    """Push back the lease of the rows still carrying one of ``tokens`` (a worker's heartbeat
    while its batch is out: a slow peer or a busy mail store must not let another worker take
    the rows over and deliver them a second time); the number of rows renewed."""
    tokens = sorted(set(tokens))
    if not tokens:
        return 0
    now = now or utcnow()
    with writing(db) as session:
        result = cast(CursorResult[Any], session.connection().execute(_RENEW, {
            "tokens": tokens, "until": now + timedelta(seconds=lease_seconds)}))
        return result.rowcount


_RENEW = update(QueueRecipient).where(
    QueueRecipient.lease_owner.in_(bindparam("tokens", expanding=True)),
    QueueRecipient.state == RecipientState.DELIVERING).values(lease_until=bindparam("until"))


def _load_claimed(session: Session, token: str) -> list[Claimed]:
    rows = session.execute(select(QueueRecipient, QueuedMessage).join(QueuedMessage).where(
        QueueRecipient.lease_owner == token).order_by(QueueRecipient.id)).all()
    owners = _reserve(session, [(msg, rcpt) for rcpt, msg in rows
                                if rcpt.kind in (RecipientKind.LOCAL, RecipientKind.SENT)])
    groups: dict[str, Claimed] = {}
    for rcpt, msg in rows:
        group = groups.get(msg.id)
        if group is None:
            group = groups[msg.id] = Claimed(
                msg.id, msg.origin, msg.envelope_from, msg.message_key, msg.created_at,
                msg.raw_local, msg.raw_peer, msg.raw_clear, token=token)
        owner = owners.get((msg.message_key, dedup_key(rcpt.kind, rcpt.address)), msg.id)
        if owner != msg.id:
            _close_duplicate(session, msg.message_key, rcpt, owner)
            continue
        group.rows.append(Row(rcpt.id, rcpt.address, rcpt.kind, rcpt.attempts, rcpt.in_doubt))
    return [g for g in groups.values() if g.rows]


def _reserve(session: Session, pairs: list[tuple[QueuedMessage, QueueRecipient]]
             ) -> dict[tuple[str, str], str]:
    if not pairs:
        return {}
    return reserve_keys(session, {(m.message_key, dedup_key(r.kind, r.address)): m.id
                                  for m, r in pairs}, utcnow())


def reserve_keys(session: Executor, wanted: dict[tuple[str, str], str], now: datetime
                 ) -> dict[tuple[str, str], str]:
    """Reserve each (Message-ID, recipient) of ``wanted`` for its queue entry: the unique key
    is inserted if absent (on PostgreSQL a concurrent insert of the same key waits for the
    other transaction, then yields to it); the owner of each key is returned."""
    if not wanted:
        return {}
    _insert_keys(session, wanted, now)
    found = session.execute(select(DeliveredKey.message_key, DeliveredKey.recipient,
                                   DeliveredKey.queue_id)
                            .where(DeliveredKey.message_key.in_({k for k, _ in wanted})))
    return {(key, rcpt): owner for key, rcpt, owner in found if (key, rcpt) in wanted}


def _close_duplicate(session: Session, key: str, rcpt: QueueRecipient, owner: str) -> None:
    """(Message-ID, recipient) belongs to another queue entry (a client that sent again after
    a lost 250): close this one without delivering."""
    rcpt.state, rcpt.lease_owner, rcpt.last_reason = RecipientState.DELIVERED, None, "doublon"
    event(session, rcpt.queue_id, key, rcpt.address, Event.DUPLICATE, f"déjà pris par {owner}")


# ---------------------------------------------------------------------- finishing
@dataclass(frozen=True)
class Done:
    """One outcome to record: the row's new state and why."""

    claimed: Claimed
    row: Row
    state: RecipientState
    code: str
    reason: str = ""
    retry_in: float = 0.0  # seconds, for QUEUED (deferred)
    in_doubt: bool = False  # QUEUED with no reply after the data: look before delivering again


# Recording runs once per delivered message (a message handed over at acceptance is a batch of
# its own): Core statements built once, run on the session's connection, not the ORM's bulk
# paths, which build and compile their statement on every call (issue #19: they were 40 % of
# the gateway's Python time in the soak).
_HELD = select(QueueRecipient.id, QueueRecipient.lease_owner).where(
    QueueRecipient.id.in_(bindparam("ids", expanding=True)))
_HELD_LOCKED = _HELD.with_for_update()
_OUTCOME = update(QueueRecipient).where(QueueRecipient.id == bindparam("row_id")).values(
    state=bindparam("new_state"), lease_owner=None, lease_until=None,
    last_code=bindparam("code"), last_reason=bindparam("reason"), updated_at=bindparam("now"),
    in_doubt=bindparam("doubt"), next_attempt_at=bindparam("due"))
_LEFT = select(QueueRecipient.queue_id).distinct().where(
    QueueRecipient.queue_id.in_(bindparam("ids", expanding=True)),
    QueueRecipient.state.in_([*PENDING, RecipientState.QUARANTINED]))
_PURGE_RECIPIENTS = delete(QueueRecipient).where(
    QueueRecipient.queue_id.in_(bindparam("ids", expanding=True)))
_PURGE_MESSAGES = delete(QueuedMessage).where(
    QueuedMessage.id.in_(bindparam("ids", expanding=True)))


def still_held(session: Session, items: Sequence[Done]) -> list[Done]:
    """The outcomes whose rows this worker still holds (fencing): a row whose lease was lost
    (the process stalled past it) belongs to the worker that took it over, which records it;
    an outcome written over its claim would undo that worker's. The rows are locked (on
    PostgreSQL) until the caller's transaction ends, so no claim slips in between."""
    wanted = {(d.row.id, d.claimed.token) for d in items}
    if not wanted:
        return []
    conn = session.connection()
    query = _HELD_LOCKED if conn.dialect.name == "postgresql" else _HELD
    held = {(row_id, owner) for row_id, owner in
            conn.execute(query, {"ids": sorted({row_id for row_id, _ in wanted})})}
    return [d for d in items if (d.row.id, d.claimed.token) in held]


def record(session: Session, items: Sequence[Done]) -> list[Done]:
    """Write a batch of outcomes with a few statements: the rows' states, the de-duplication
    keys of the deliveries (same transaction), the timeline. Only the rows still held
    (``still_held``); the outcomes written are returned."""
    items = still_held(session, items)
    if not items:
        return []
    now = utcnow()
    conn = session.connection()
    conn.execute(_OUTCOME, [{
        "row_id": d.row.id, "new_state": d.state, "code": d.code[:16],
        "reason": d.reason[:1000], "now": now, "doubt": d.in_doubt,
        "due": now + timedelta(seconds=d.retry_in)} for d in items])
    keys = {(d.claimed.message_key, dedup_key(d.row.kind, d.row.address)): d.claimed.queue_id
            for d in items if d.state is RecipientState.DELIVERED
            and d.row.kind in (RecipientKind.LOCAL, RecipientKind.SENT)}
    if keys:
        _insert_keys(conn, keys, now)
    for d in items:  # a final failure releases the reservation: a later resend may deliver
        if d.state in (RecipientState.BOUNCED, RecipientState.FAILED) and \
                d.row.kind in (RecipientKind.LOCAL, RecipientKind.SENT):
            session.execute(delete(DeliveredKey).where(
                DeliveredKey.message_key == d.claimed.message_key,
                DeliveredKey.recipient == dedup_key(d.row.kind, d.row.address),
                DeliveredKey.queue_id == d.claimed.queue_id))
    conn.execute(_INSERT_EVENT, [{
        "at": now, "queue_id": d.claimed.queue_id, "message_key": d.claimed.message_key[:250],
        "recipient": d.row.address, "event": _EVENTS[d.state],
        "detail": detail(d.row.kind, d.code, d.reason),
    } for d in items])
    return list(items)


_EVENTS = {RecipientState.DELIVERED: Event.DELIVERED, RecipientState.QUEUED: Event.DEFERRED,
           RecipientState.BOUNCED: Event.BOUNCED, RecipientState.FAILED: Event.FAILED}


# INSERT … ON CONFLICT DO NOTHING: a key already there (a delivery recovered after a crash) is
# not an error. One statement per dialect, built once.
_INSERT_KEYS = {"postgresql": postgresql.insert(DeliveredKey).on_conflict_do_nothing(),
                "sqlite": sqlite.insert(DeliveredKey).on_conflict_do_nothing()}


def _insert_keys(session: Executor, keys: dict[tuple[str, str], str], now: datetime) -> None:
    bind = session.get_bind() if isinstance(session, Session) else session
    statement = _INSERT_KEYS["postgresql" if bind.dialect.name == "postgresql" else "sqlite"]
    # Sorted: concurrent claims take the unique-index entries in one order (no deadlock).
    session.execute(statement, [{"message_key": k[0], "recipient": k[1], "queue_id": qid,
                                 "at": now} for k, qid in sorted(keys.items())])


def event(session: Session, queue_id: str, message_key: str, recipient: str, what: Event,
          words: str = "") -> None:
    """One timeline row of its own (a duplicate closed, a DSN or an MDN sent)."""
    session.add(DeliveryEvent(queue_id=queue_id, message_key=message_key[:250],
                              recipient=recipient, event=what, detail=words[:500]))


def add_recipients(session: Session, claimed: Claimed,
                   recipients: Iterable[tuple[str, RecipientKind]]) -> None:
    """More deliveries of the same message (notifications after a local delivery)."""
    for address, kind in recipients:
        session.add(QueueRecipient(queue_id=claimed.queue_id, address=address, kind=kind,
                                   state=RecipientState.QUEUED, next_attempt_at=utcnow(),
                                   attempts=0, in_doubt=False))
        event(session, claimed.queue_id, claimed.message_key, address, Event.QUEUED,
              detail(kind))


def purge_done(session: Session, queue_ids: Iterable[str]) -> list[str]:
    """Delete the messages (not their timeline) that have no recipient left pending or
    quarantined; the ids deleted."""
    ids = set(queue_ids)
    if not ids:
        return []
    session.flush()  # the notifications just added (``add_recipients``) count as pending
    conn = session.connection()
    left = set(conn.scalars(_LEFT, {"ids": sorted(ids)}))
    finished = sorted(ids - left)
    if finished:
        conn.execute(_PURGE_RECIPIENTS, {"ids": finished})
        conn.execute(_PURGE_MESSAGES, {"ids": finished})
    return finished


# ---------------------------------------------------------------------- administration
def depth(session: Session) -> int:
    """Recipients still to deliver (the queue depth metric)."""
    return int(session.scalar(select(func.count()).select_from(QueueRecipient).where(
        QueueRecipient.state.in_(PENDING))) or 0)


def oldest_pending(session: Session) -> datetime | None:
    """When the oldest message with a recipient still to deliver was accepted (the queue age
    metric: a stuck peer or mail store shows here long before the expiry DSNs)."""
    return session.scalar(select(func.min(QueuedMessage.created_at)).join(
        QueueRecipient, QueueRecipient.queue_id == QueuedMessage.id).where(
        QueueRecipient.state.in_(PENDING)))


def pending(session: Session, limit: int = 100) -> list[QueuedMessage]:
    """Messages still in the queue, oldest first."""
    return list(session.scalars(select(QueuedMessage).order_by(QueuedMessage.created_at)
                                .limit(limit)))


def retry_now(session: Session, queue_id: str) -> int:
    """Make the message's waiting recipients due now; the number of rows changed."""
    # An UPDATE's result is a CursorResult; Session.execute is typed with the base Result.
    result = cast(CursorResult[Any], session.execute(update(QueueRecipient).where(
        QueueRecipient.queue_id == queue_id,
        QueueRecipient.state.in_([RecipientState.QUEUED, RecipientState.QUARANTINED]),
    ).values(state=RecipientState.QUEUED, next_attempt_at=utcnow())))
    return result.rowcount


def remove(session: Session, queue_id: str) -> bool:
    """Delete a message from the queue (its timeline stays)."""
    found = session.get(QueuedMessage, queue_id)
    if found is None:
        return False
    session.execute(delete(QueueRecipient).where(QueueRecipient.queue_id == queue_id))
    session.delete(found)
    session.flush()
    return True


def timeline(session: Session, queue_id: str) -> list[DeliveryEvent]:
    return list(session.scalars(select(DeliveryEvent).where(DeliveryEvent.queue_id == queue_id)
                                .order_by(DeliveryEvent.id)))
