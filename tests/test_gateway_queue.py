"""The durable queue on SQLite and PostgreSQL: claims, leases, backoff, de-duplication."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from core.db import Database, utcnow
from spool import queue as q
from spool.models import (
    DeliveredKey,
    DeliveryEvent,
    Origin,
    QueuedMessage,
    QueueRecipient,
    RecipientKind,
    RecipientState,
)

LOCAL = RecipientKind.LOCAL


def put(db: Database, key: str, *addresses: str, queue_id: str | None = None) -> str:
    queue_id = queue_id or q.new_queue_id()
    with db.transaction() as session:
        q.enqueue(session, queue_id=queue_id, origin=Origin.SUBMISSION, envelope_from="a@x.test",
                  message_key=key, submitter="a", size=3, local=b"abc",
                  recipients=[(a, LOCAL) for a in addresses])
    return queue_id


def state(db: Database, queue_id: str) -> set[RecipientState]:
    with db.transaction() as session:
        return set(session.scalars(select(QueueRecipient.state)
                                   .where(QueueRecipient.queue_id == queue_id)))


def test_claim_lease_and_takeover_after_a_crash(db: Database) -> None:
    queue_id = put(db, "<1@x>", "b@x.test", "c@x.test")
    first = q.claim(db, "w1", limit=10, lease_seconds=60)
    assert [len(c.rows) for c in first] == [2] and first[0].raw_local == b"abc"
    assert q.claim(db, "w2", limit=10, lease_seconds=60) == []  # leased
    later = utcnow() + timedelta(seconds=61)  # w1 died: its lease expires
    again = q.claim(db, "w2", limit=10, lease_seconds=60, now=later)
    assert all(row.in_doubt and row.attempts == 2 for row in again[0].rows)
    assert state(db, queue_id) == {RecipientState.DELIVERING}


def test_deferred_waits_for_its_backoff(db: Database) -> None:
    put(db, "<2@x>", "b@x.test")
    claimed = q.claim(db, "w", limit=10, lease_seconds=60)[0]
    with db.transaction() as session:
        q.record(session, [q.Done(claimed, claimed.rows[0], RecipientState.QUEUED, "451",
                                  "plus tard", retry_in=30)])
    assert q.claim(db, "w", limit=10, lease_seconds=60) == []
    assert q.claim(db, "w", limit=10, lease_seconds=60,
                   now=utcnow() + timedelta(seconds=31))
    assert [q.backoff(n, 60) for n in (1, 2, 3, 10)] == [60, 120, 240, 3600]


def test_a_deferral_without_reply_stays_in_doubt(db: Database) -> None:
    """A row deferred because the store went silent after the data comes back in doubt (the
    worker will search the mailbox first); a plain deferral clears the flag."""
    put(db, "<doubt@x>", "b@x.test", "c@x.test")
    claimed = q.claim(db, "w", limit=10, lease_seconds=60)[0]
    silent, refused = claimed.rows
    with db.transaction() as session:
        q.record(session, [q.Done(claimed, silent, RecipientState.QUEUED, "451", "muet",
                                  in_doubt=True),
                           q.Done(claimed, refused, RecipientState.QUEUED, "451", "plus tard")])
    again = q.claim(db, "w", limit=10, lease_seconds=60)[0]
    assert {r.address: r.in_doubt for r in again.rows} == {"b@x.test": True, "c@x.test": False}


def test_a_second_copy_of_the_same_message_is_not_delivered_again(db: Database) -> None:
    first = put(db, "<3@x>", "b@x.test")
    claimed = q.claim(db, "w", limit=10, lease_seconds=60)[0]
    with db.transaction() as session:
        q.record(session, [q.Done(claimed, claimed.rows[0], RecipientState.DELIVERED, "250")])
        assert q.purge_done(session, [first]) == [first]
    second = put(db, "<3@x>", "b@x.test", "d@x.test")  # the client sent it again
    again = q.claim(db, "w", limit=10, lease_seconds=60)
    assert [r.address for c in again for r in c.rows] == ["d@x.test"]
    with db.transaction() as session:
        events = set(session.scalars(select(DeliveryEvent.event)
                                     .where(DeliveryEvent.queue_id == second)))
        keys = session.scalar(select(func.count()).select_from(DeliveredKey))
    assert "duplicate" in events and keys == 2


def test_twins_claimed_together_deliver_once(db: Database) -> None:
    put(db, "<4@x>", "b@x.test")
    put(db, "<4@x>", "b@x.test")
    claimed = q.claim(db, "w", limit=10, lease_seconds=60)
    assert sum(len(c.rows) for c in claimed) == 1


def test_bounce_releases_the_key_and_purges(db: Database) -> None:
    queue_id = put(db, "<5@x>", "b@x.test")
    claimed = q.claim(db, "w", limit=10, lease_seconds=60)[0]
    with db.transaction() as session:
        q.record(session, [q.Done(claimed, claimed.rows[0], RecipientState.BOUNCED, "550",
                                  "inconnu")])
        q.purge_done(session, [queue_id])
        assert session.get(QueuedMessage, queue_id) is None
        assert session.scalar(select(func.count()).select_from(DeliveredKey)) == 0
        assert [e.event for e in q.timeline(session, queue_id)] == ["queued", "bounced"]


def test_a_claim_takes_its_share_of_the_messages_due(db: Database) -> None:
    """Four workers, three messages just arrived: the first claim takes the oldest message
    with all its recipients, not the three (the other workers deliver the rest meanwhile);
    alone, a worker takes them all; a long backlog goes in batches of ``limit``."""
    ids = [put(db, f"<s{n}@x>", "b@x.test", "c@x.test") for n in range(3)]
    first = q.claim(db, "w1", limit=12, lease_seconds=60, share=4)
    assert [(c.queue_id, len(c.rows)) for c in first] == [(ids[0], 2)]
    second = q.claim(db, "w2", limit=12, lease_seconds=60, share=2)
    assert [c.queue_id for c in second] == [ids[1]]
    assert [c.queue_id for c in q.claim(db, "w3", limit=12, lease_seconds=60, share=4)] == [
        ids[2]]
    more = [put(db, f"<t{n}@x>", "b@x.test", "c@x.test") for n in range(3)]
    assert [c.queue_id for c in q.claim(db, "w4", limit=12, lease_seconds=60)] == more
    for n in range(40):
        put(db, f"<u{n}@x>", "b@x.test", "c@x.test")
    batch = q.claim(db, "w5", limit=12, lease_seconds=60, share=4)
    assert sum(len(c.rows) for c in batch) == 12 and all(len(c.rows) == 2 for c in batch)


def test_an_empty_poll_on_sqlite_does_not_wait_for_the_write_lock(sqlite_db: Database) -> None:
    """Idle workers poll twice a second: on SQLite an empty claim only reads, so it neither
    queues behind a writer (here another process in a long write transaction) nor holds up
    the acceptances; with something due, the claim writes as before."""
    path = sqlite_db.engine.url.database
    assert path
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    result: list[list[q.Claimed]] = []
    try:
        poll = threading.Thread(target=lambda: result.append(
            q.claim(sqlite_db, "w", limit=5, lease_seconds=60)), daemon=True)
        poll.start()
        poll.join(10)  # the write lock would make it wait for SQLite's busy timeout (30 s)
        assert result == [[]]
    finally:
        holder.rollback()
        holder.close()
    queue_id = put(sqlite_db, "<poll@x>", "b@x.test")
    assert [c.queue_id for c in q.claim(sqlite_db, "w", limit=5, lease_seconds=60)] == [
        queue_id]


HOLD_WRITERS = """
import sys
from core.db import Database
from spool import queue as q
with q._writers(Database(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_gateway_processes_queue_for_sqlite_s_write_lock_on_a_file_lock(
        sqlite_db: Database) -> None:
    """Between the gateway's processes on one SQLite file, writers wait on a file lock that
    the kernel hands over on release, not in SQLite's busy handler (sleeps up to 100 ms
    between tries, so a process could lose to the other's writers for seconds)."""
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen([sys.executable, "-c", HOLD_WRITERS, str(sqlite_db.url)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}) as other:
        assert other.stdout is not None and other.stdin is not None
        try:
            assert other.stdout.readline().strip() == "held"
            entered = threading.Event()

            def write() -> None:
                with q.writing(sqlite_db):
                    entered.set()

            waiting = threading.Thread(target=write, daemon=True)
            waiting.start()
            assert not entered.wait(0.5)  # the other process holds the gateway's writer lock
            other.stdin.write("\n")
            other.stdin.flush()
            assert entered.wait(10)
            assert other.wait(10) == 0
        finally:
            if other.poll() is None:
                other.kill()


def test_concurrent_claims_never_share_a_row(db: Database) -> None:
    for n in range(60):
        put(db, f"<c{n}@x>", "b@x.test", "c@x.test")
    taken: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            batch = q.claim(db, name, limit=7, lease_seconds=60)
            if not batch:
                return
            with lock:
                taken.extend(r.id for c in batch for r in c.rows)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 120 and len(set(taken)) == 120


def test_administration(db: Database) -> None:
    queue_id = put(db, "<6@x>", "b@x.test")
    with db.transaction() as session:
        assert q.depth(session) == 1
        assert [m.id for m in q.pending(session)] == [queue_id]
        assert q.retry_now(session, queue_id) == 1
        assert q.remove(session, queue_id) and not q.remove(session, queue_id)
        assert q.depth(session) == 0


# ---------------------------------------------------------------------- claimed as queued
def put_held(db: Database, key: str, *addresses: str, sent: str = "",
             state: RecipientState = RecipientState.QUEUED) -> tuple[str, list[q.Claimed]]:
    """``put`` as the gateway does when a worker is idle: claimed in the same transaction."""
    queue_id = q.new_queue_id()
    rcpts = [(a, LOCAL) for a in addresses] + ([(sent, RecipientKind.SENT)] if sent else [])
    with db.transaction() as session:
        held = q.enqueue(session, queue_id=queue_id, origin=Origin.SUBMISSION,
                         envelope_from="a@x.test", message_key=key, submitter="a", size=3,
                         local=b"abc", recipients=rcpts, state=state,
                         hold=q.Hold(q.lease_token("w1"), 60))
    return queue_id, held


def test_a_message_claimed_as_it_is_queued_is_held_as_a_claim_would_hold_it(
        db: Database) -> None:
    queue_id, held = put_held(db, "<h1@x>", "b@x.test", sent="a@x.test")
    assert [c.queue_id for c in held] == [queue_id] and held[0].raw_local == b"abc"
    assert sorted((r.address, r.kind, r.attempts, r.in_doubt) for r in held[0].rows) == [
        ("a@x.test", RecipientKind.SENT, 1, False), ("b@x.test", LOCAL, 1, False)]
    assert state(db, queue_id) == {RecipientState.DELIVERING}
    assert q.claim(db, "w2", limit=10, lease_seconds=60) == []  # nobody else takes it
    with db.transaction() as session:  # both keys reserved for it, in that transaction
        assert set(session.execute(select(DeliveredKey.recipient, DeliveredKey.queue_id))) == {
            ("b@x.test", queue_id), ("Sent:a@x.test", queue_id)}
        # its lease token is the one on the rows: the outcome is recorded (fencing passes)
        assert len(q.record(session, [q.Done(held[0], r, RecipientState.DELIVERED, "250")
                                      for r in held[0].rows])) == 2
    assert state(db, queue_id) == {RecipientState.DELIVERED}


def test_a_held_message_whose_process_died_is_taken_over_in_doubt(db: Database) -> None:
    queue_id, held = put_held(db, "<h2@x>", "b@x.test")
    again = q.claim(db, "w2", limit=10, lease_seconds=60, now=utcnow() + timedelta(seconds=61))
    assert [c.queue_id for c in again] == [queue_id]
    assert all(row.in_doubt and row.attempts == 2 for row in again[0].rows)
    with db.transaction() as session:  # the dead holder's late outcome is not written
        assert q.record(session, [q.Done(held[0], held[0].rows[0], RecipientState.DELIVERED,
                                         "250")]) == []


def test_a_twin_of_a_held_message_is_queued_and_closed_as_a_duplicate(db: Database) -> None:
    first, held = put_held(db, "<h3@x>", "b@x.test")
    second, twin = put_held(db, "<h3@x>", "b@x.test", "d@x.test")  # sent again
    assert held and twin == []  # b's key is the first's: the twin is claimed the usual way
    assert state(db, second) == {RecipientState.QUEUED}
    again = q.claim(db, "w", limit=10, lease_seconds=60)
    assert [r.address for c in again for r in c.rows] == ["d@x.test"]
    with db.transaction() as session:
        events = set(session.scalars(select(DeliveryEvent.event)
                                     .where(DeliveryEvent.queue_id == second)))
    assert "duplicate" in events


def test_a_quarantined_message_is_never_claimed_as_it_is_queued(db: Database) -> None:
    queue_id, held = put_held(db, "<h4@x>", "b@x.test", state=RecipientState.QUARANTINED)
    assert held == [] and state(db, queue_id) == {RecipientState.QUARANTINED}
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(DeliveredKey)) == 0
