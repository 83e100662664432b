"""What several gateway processes must share (issue #19), on SQLite and PostgreSQL: the rate
limit counted in the database, and the directory's change counter that clears the grants."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select, update

from core.db import Database
from gateway.accept.context import Decisions, DirectoryWatch
from gateway.accept.rates import RateCount, RateLimit
from gateway.errors import RateLimited
from trust_space import changes
from trust_space.directory import change_state
from trust_space.models import Mailbox, MailboxKind, MailboxState

MINUTE = 60 * 29_000_000  # a minute's start, far from the wall clock's


def test_two_processes_share_one_limit(db: Database) -> None:
    other = Database(db.url)  # a second engine: what a second process has
    try:
        first, second = RateLimit(db, 3), RateLimit(other, 3)
        first.check("marie", now=MINUTE + 1)
        second.check("marie", now=MINUTE + 2)
        first.check("marie", now=MINUTE + 3)
        for limit in (second, first):
            with pytest.raises(RateLimited) as err:
                limit.check("marie", now=MINUTE + 4)
            assert err.value.smtp_reply().startswith("451 4.7.1")
        second.check("paul", now=MINUTE + 4)  # per identity
        with db.read() as session:  # the refusals were not counted
            assert session.scalar(select(RateCount.count).where(
                RateCount.key == "marie", RateCount.minute == MINUTE // 60)) == 3
    finally:
        other.dispose()


def test_the_window_slides(db: Database) -> None:
    limit = RateLimit(db, 2)
    limit.check("marie", now=MINUTE + 50)
    limit.check("marie", now=MINUTE + 55)
    # 10 s into the next minute: the previous one still weighs 2 × 50/60 → refused
    with pytest.raises(RateLimited):
        limit.check("marie", now=MINUTE + 70)
    limit.check("marie", now=MINUTE + 115)  # 2 × 5/60 + 1 ≤ 2
    limit.check("marie", now=MINUTE + 185)  # two minutes on: only the last one counts


def test_no_limit_counts_nothing(db: Database) -> None:
    RateLimit(db, 0).check("marie")
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(RateCount)) == 0


def _mailbox(db: Database) -> int:
    with db.transaction() as session:
        box = Mailbox(address="secretariat@mss.test", kind=MailboxKind.ORGANISATIONAL,
                      state=MailboxState.PUBLISHED)
        session.add(box)
        session.flush()
        return box.id


def test_directory_changes_move_the_counter(db: Database) -> None:
    with db.read() as session:
        start = changes.version(session)
    box_id = _mailbox(db)
    with db.read() as session:
        after_insert = changes.version(session)
    assert after_insert > start
    with db.transaction() as session:  # through the domain…
        change_state(session, session.get_one(Mailbox, box_id), MailboxState.SUSPENDED)
    with db.transaction() as session:  # … or any SQL statement
        session.execute(update(Mailbox).where(Mailbox.id == box_id)
                        .values(state=MailboxState.PUBLISHED))
    with db.read() as session:
        assert changes.version(session) >= after_insert + 2
    with db.transaction() as session:  # a rolled back change leaves it alone
        before = changes.version(session)
    with pytest.raises(RuntimeError), db.transaction() as session:
        session.execute(update(Mailbox).values(display_name="x"))
        raise RuntimeError
    with db.read() as session:
        assert changes.version(session) == before


def test_the_watch_clears_the_grants_within_its_interval(db: Database) -> None:
    decisions = Decisions(ttl=300)
    watch = DirectoryWatch(db, decisions, interval=0.2)
    watch.start()
    try:
        decisions.put(("rcpt", False, "secretariat@mss.test"), "route")
        time.sleep(0.5)
        assert decisions.get(("rcpt", False, "secretariat@mss.test")) == "route"
        stale = decisions.generation  # a look-up that started before the change…
        _mailbox(db)
        deadline = time.monotonic() + 2
        while decisions.get(("rcpt", False, "secretariat@mss.test")) is not None:
            assert time.monotonic() < deadline, "cache non vidé après un changement"
            time.sleep(0.05)
        decisions.put(("rcpt", False, "secretariat@mss.test"), "old route", stale)
        assert decisions.get(("rcpt", False, "secretariat@mss.test")) is None  # … is dropped
    finally:
        watch.stop()
