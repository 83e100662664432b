"""Leases on a batch out: renewed while a slow mail store or peer holds it, and fenced when a
stalled process lost it (issue #19: a batch that outlived its lease was taken over and
delivered twice)."""

from __future__ import annotations

import copy
import itertools
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from core.db import Database, utcnow
from gateway.deliver.workers import Leases, Workers
from mailstore.lmtp import LmtpClient, Result
from spool import queue as q
from spool.doorbell import SocketDoorbell
from spool.models import (
    DeliveredKey,
    DeliveryEvent,
    Origin,
    QueueRecipient,
    RecipientKind,
    RecipientState,
)
from tests.gateway_fixtures import Operator, build_operator, start_operator, stop_operator
from tests.mailstore_fixtures import open_tempdir
from tests.test_gateway_queue import put, state

pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures"]
MARIE, JULIE = "marie.martin@mss.test", "julie.bernard@mss.test"
LEASE = 3  # seconds: the heartbeat every second


# ---------------------------------------------------------------------- the queue itself
def test_a_renewed_lease_is_not_taken_over(db: Database) -> None:
    put(db, "<r1@x>", "b@x.test")
    first = q.claim(db, "w1", limit=10, lease_seconds=60)
    assert q.renew(db, [first[0].token], 60, now=utcnow() + timedelta(seconds=50)) == 1
    # 61 s after the claim the first lease would have expired; the renewal runs to 110 s.
    assert q.claim(db, "w2", limit=10, lease_seconds=60,
                   now=utcnow() + timedelta(seconds=61)) == []
    assert q.claim(db, "w2", limit=10, lease_seconds=60, now=utcnow() + timedelta(seconds=111))
    assert q.renew(db, [], 60) == 0


def test_a_lost_lease_records_nothing_over_the_new_holder(db: Database) -> None:
    """w1 stalled past its lease, w2 took the row over (in doubt) and delivered it: w1's late
    outcome (a deferral, here) must not put the row back in the queue nor touch the key."""
    queue_id = put(db, "<r2@x>", "b@x.test")
    stale = q.claim(db, "w1", limit=10, lease_seconds=60)[0]
    later = utcnow() + timedelta(seconds=61)
    fresh = q.claim(db, "w2", limit=10, lease_seconds=60, now=later)[0]
    assert fresh.rows[0].in_doubt and fresh.token != stale.token
    with db.transaction() as session:
        assert q.record(session, [q.Done(stale, stale.rows[0], RecipientState.QUEUED, "451",
                                         "trop tard", retry_in=30)]) == []
    assert state(db, queue_id) == {RecipientState.DELIVERING}  # still w2's
    with db.transaction() as session:
        written = q.record(session, [q.Done(fresh, fresh.rows[0], RecipientState.DELIVERED,
                                            "250")])
    assert len(written) == 1
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(DeliveryEvent).where(
            DeliveryEvent.queue_id == queue_id, DeliveryEvent.event == "deferred")) == 0
        assert session.scalar(select(DeliveredKey.queue_id).where(
            DeliveredKey.message_key == "<r2@x>")) == queue_id
    # Renewing a lost lease renews nothing.
    assert q.renew(db, [stale.token], 60) == 0


# ---------------------------------------------------------------------- a real gateway
class SlowStore:
    """The real LMTP client, after a pause longer than the lease: a mail store under load."""

    def __init__(self, real: LmtpClient, pause: float) -> None:
        self.real, self.pause = real, pause
        self.calls = 0

    def deliver(self, raw: bytes, sender: str, recipients: list[str]) -> dict[str, Result]:
        self.calls += 1
        time.sleep(self.pause)
        return self.real.deliver(raw, sender, recipients)


@pytest.fixture(scope="module")
def leased() -> Iterator[Operator]:
    root = open_tempdir("mss-lease-")
    op = start_operator(build_operator(root, "mss.test", "Operateur Bail",
                                       queue_lease_seconds=LEASE, retry_base_seconds=1))
    yield op
    stop_operator(op)
    shutil.rmtree(root, ignore_errors=True)


def test_a_batch_slower_than_its_lease_is_delivered_once(leased: Operator) -> None:
    gateway = leased.gateway
    assert gateway.workers is not None and gateway.deliverer is not None and gateway.gw
    gateway.workers.stop()
    subject = f"Lent {uuid.uuid4().hex[:6]}"
    try:
        raw = (f"From: {MARIE}\r\nTo: {JULIE}\r\nSubject: {subject}\r\nMessage-ID: "
               f"<{uuid.uuid4().hex}@mss.test>\r\n\r\nBonjour.\r\n").encode()
        queue_id = leased.submit(MARIE, [JULIE], raw)
        slow = copy.copy(gateway.deliverer)
        slow.lmtp = SlowStore(gateway.deliverer.lmtp, pause=2.5 * LEASE)  # type: ignore[assignment]
        slow.leases = Leases(gateway.gw)
        taken: list[int] = []
        worker = threading.Thread(target=lambda: taken.append(slow.run_once("lent")))
        worker.start()
        while slow.lmtp.calls == 0:  # type: ignore[attr-defined]
            time.sleep(0.05)
        # Another process's worker keeps trying while the slow one holds the batch.
        others = 0
        while worker.is_alive():
            others += gateway.deliverer.run_once("autre")
            time.sleep(0.2)
        worker.join()
        assert others == 0 and taken == [2]  # JULIE and MARIE's Sent copy
    finally:
        gateway.workers = Workers(gateway.deliverer, 2, owner="test")
        gateway.gw.dispatch = gateway.workers
        gateway.workers.start()
    with leased.space.db.transaction() as session:
        rows = session.scalars(select(QueueRecipient).where(
            QueueRecipient.queue_id == queue_id)).all()
        events = [e.event for e in session.scalars(select(DeliveryEvent).where(
            DeliveryEvent.queue_id == queue_id))]
    assert rows == [] or {r.state for r in rows} == {RecipientState.DELIVERED}
    assert events.count("delivered") == 2
    copies = [r for r in leased.messages(JULIE) if subject.encode() in r]
    assert len(copies) == 1


# ---------------------------------------------------------------------- handed over at acceptance
def swap_workers(op: Operator, count: int, poll: float) -> Workers:
    """The gateway's delivery workers replaced by ``count`` polling every ``poll`` seconds,
    once every one of them waits for work."""
    gateway = op.gateway
    assert gateway.workers is not None and gateway.deliverer is not None and gateway.gw
    gateway.workers.stop()
    workers = Workers(gateway.deliverer, count, owner="test", poll=poll)
    gateway.workers, gateway.gw.dispatch = workers, workers
    workers.start()
    assert until_idle(workers, count), "les livreurs n'attendent pas"
    return workers


def note(subject: str) -> bytes:
    return (f"From: {MARIE}\r\nTo: {JULIE}\r\nSubject: {subject}\r\nMessage-ID: "
            f"<{uuid.uuid4().hex}@mss.test>\r\n\r\nBonjour.\r\n").encode()


def copies(op: Operator, subject: str) -> int:
    return sum(subject.encode() in raw for raw in op.messages(JULIE))


def test_a_message_accepted_while_a_worker_waits_is_handed_to_it(leased: Operator) -> None:
    """No claim transaction and no wake-up: the DATA transaction claims it for the idle
    worker (issue #19, submit → visible). With that worker promised to another message, the
    next one is claimed from the queue as before."""
    value = leased.gateway.metrics.registry.get_sample_value

    def counts() -> tuple[float, float]:
        return (value("mss_delivery_handed_total") or 0.0,
                value("mss_delivery_claim_seconds_count", {"found": "yes"}) or 0.0)

    # A poll of a minute: only a hand-over or a wake-up can deliver within the test. (Claims
    # are not expected to stay at their count: an earlier test's deferred row may fall due.)
    workers = swap_workers(leased, 1, poll=60)
    try:
        handed, _ = counts()
        leased.submit(MARIE, [JULIE], note(subject := f"Remis {uuid.uuid4().hex[:6]}"))
        leased.wait_for(JULIE, lambda raw: subject.encode() in raw)
        assert counts()[0] == handed + 1  # counted as the worker takes it, before LMTP
        until_idle(workers, 1)
        assert workers.reserve() == "test"  # the one idle worker, promised here
        assert workers.reserve() is None  # …so not to a second message
        _, claims = counts()
        try:
            leased.submit(MARIE, [JULIE], note(other := f"Pris {uuid.uuid4().hex[:6]}"))
            leased.wait_for(JULIE, lambda raw: other.encode() in raw)
        finally:
            workers.hand_over([])  # the promise given back
        assert counts()[0] == handed + 1 and counts()[1] >= claims + 1  # woken, claimed
        assert copies(leased, subject) == copies(leased, other) == 1
    finally:
        swap_workers(leased, 2, poll=0.5)


def test_a_message_handed_over_as_the_workers_stop_goes_back_to_the_queue(
        leased: Operator) -> None:
    """Accepted (committed, claimed for an idle worker) while the gateway stops: it is given
    back to the queue unattempted, neither lost until its lease expires nor in doubt."""
    workers = swap_workers(leased, 1, poll=60)
    db = leased.space.db
    owner = workers.reserve()
    assert owner is not None
    queue_id, subject = q.new_queue_id(), f"Arret {uuid.uuid4().hex[:6]}"
    with q.appending(db) as conn:
        held = q.enqueue(conn, queue_id=queue_id, origin=Origin.SUBMISSION,
                         envelope_from=MARIE, message_key=f"<{queue_id}@mss.test>",
                         submitter=MARIE, size=100, local=note(subject),
                         recipients=[(JULIE, RecipientKind.LOCAL)],
                         hold=q.Hold(q.lease_token(owner), LEASE))
    assert held and state(db, queue_id) == {RecipientState.DELIVERING}
    workers.stop()
    assert workers.reserve() is None
    workers.hand_over(held)  # the DATA transaction's end, after the stop
    with db.transaction() as session:
        row = session.scalars(select(QueueRecipient).where(
            QueueRecipient.queue_id == queue_id)).one()
        assert (row.state, row.in_doubt, row.lease_owner) == (RecipientState.QUEUED, False,
                                                              None)
    swap_workers(leased, 2, poll=0.5)
    leased.wait_for(JULIE, lambda raw: subject.encode() in raw)
    assert copies(leased, subject) == 1


def test_a_message_no_worker_here_could_take_rings_the_other_processes(
        leased: Operator) -> None:
    """The accepting process has no idle worker; another gateway process (its workers here,
    with a bell of their own in the same run directory) polls once a minute: the ring has it
    claim the message now (without it: at its next poll, a minute later)."""
    gateway = leased.gateway
    bells = leased.space.settings.run_dir / "bell"
    value = gateway.metrics.registry.get_sample_value

    def rings(direction: str) -> float:
        return value("mss_queue_rings_total", {"direction": direction}) or 0.0

    busy = swap_workers(leased, 0, poll=60)  # nobody idle here: nothing is handed over
    busy.bell = SocketDoorbell(bells)
    other = Workers(gateway.deliverer, 2, owner="autre", poll=60, bell=SocketDoorbell(bells))
    other.start()
    try:
        assert until_idle(other, 2)
        sent, heard = rings("sent"), rings("heard")
        leased.submit(MARIE, [JULIE], note(subject := f"Sonne {uuid.uuid4().hex[:6]}"))
        leased.wait_for(JULIE, lambda raw: subject.encode() in raw, timeout=30)
        assert rings("sent") == sent + 1 and rings("heard") >= heard + 1
        assert copies(leased, subject) == 1
    finally:
        other.stop()
        busy.bell.close()
        swap_workers(leased, 2, poll=0.5)


def until_idle(workers: Workers, count: int) -> bool:
    deadline = time.monotonic() + 20
    while workers.idle < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class EmptyClaims:
    """A deliverer whose claims find nothing; the first one's message is committed (and the
    workers woken) just after it read the queue: the race of an empty claim and a wake-up."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.workers: Workers | None = None

    def run_once(self, owner: str, limit: int, share: int) -> int:
        self.calls.append(time.monotonic())
        if len(self.calls) == 1 and self.workers is not None:
            self.workers.wake()
        return 0


def test_a_wake_up_during_an_empty_claim_is_not_lost() -> None:
    """Else the message waits for the next poll (half a second by default): a wake-up counts
    from before the claim, not from the wait that follows it."""
    deliverer = EmptyClaims()
    workers = Workers(deliverer, 1, owner="t", poll=60)  # type: ignore[arg-type]
    deliverer.workers = workers
    workers.start()
    try:
        deadline = time.monotonic() + 10
        while len(deliverer.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(deliverer.calls) >= 2 and deliverer.calls[1] - deliverer.calls[0] < 5
    finally:
        workers.stop()


class CountingClaims:
    """A deliverer that records each claim (when, by which thread); the first ``due`` claims
    find one message, the rest nothing."""

    def __init__(self, due: int = 0) -> None:
        self.calls: list[tuple[float, str]] = []
        self.held: list[list[object]] = []
        self.due = due
        self.lock = threading.Lock()
        counter = SimpleNamespace(inc=lambda n=1: None)
        self.metrics = SimpleNamespace(handed=counter,
                                       rings=SimpleNamespace(labels=lambda _d: counter))

    def run_once(self, owner: str, limit: int, share: int) -> int:
        with self.lock:
            self.calls.append((time.monotonic(), owner))
            if self.due:
                self.due -= 1
                return 1
        return 0

    def run_held(self, batch: list[object]) -> int:
        self.held.append(batch)
        return len(batch)

    def release(self, batch: list[object]) -> None:
        raise AssertionError("nothing is released here")


def idle_workers(deliverer: CountingClaims, count: int) -> Workers:
    """``count`` workers polling every 50 ms, started, once all of them wait for work."""
    workers = Workers(deliverer, count, owner="t", poll=0.05)  # type: ignore[arg-type]
    workers.start()
    assert until_idle(workers, count)
    return workers


def test_idle_workers_poll_the_queue_one_at_a_time() -> None:
    """Eight idle workers made sixteen empty claims a second; one of them polls now, and the
    polling goes on when that one is handed a message."""
    deliverer = CountingClaims()
    workers = idle_workers(deliverer, 8)
    try:
        deadline = time.monotonic() + 10
        start, first = time.monotonic(), len(deliverer.calls)
        time.sleep(1.0)
        polls = len(deliverer.calls) - first
        # One poller: ~20 in a second (each poll ≥ 50 ms after the last); eight would be ~160.
        assert 5 <= polls <= 1.0 / 0.05 + 3, polls
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(deliverer.calls[first:])]
        # Never two pollers at once (their claims would come together); a little below 50 ms
        # is the next poller's wait starting before the last one's claim is recorded.
        assert min(gaps) >= 0.02, gaps
        # A message handed over: one worker takes it, and someone still polls afterwards.
        owner = workers.reserve()
        assert owner == "t"
        workers.hand_over(["message"])  # type: ignore[list-item]
        while not deliverer.held and time.monotonic() < deadline:
            time.sleep(0.01)
        assert deliverer.held == [["message"]]
        before = len(deliverer.calls)
        time.sleep(0.5)
        assert len(deliverer.calls) - before >= 3
        assert time.monotonic() - start < 5
    finally:
        workers.stop(timeout=5)
    assert all(not t.is_alive() for t in workers._threads)


def test_a_poll_that_finds_a_message_wakes_the_other_idle_workers() -> None:
    """Messages no wake-up announced (another process's, retries): the poller finds one, and
    the idle workers claim too instead of leaving the backlog to one thread."""
    deliverer = CountingClaims()
    workers = idle_workers(deliverer, 4)
    try:
        with deliverer.lock:
            deliverer.due, first = 6, len(deliverer.calls)
        time.sleep(0.5)
        busy = {owner for _, owner in deliverer.calls[first:first + 10]}
        assert deliverer.due == 0 and len(busy) >= 3, deliverer.calls[first:]
    finally:
        workers.stop(timeout=5)


def test_a_nudge_makes_the_poller_claim_now_and_wakes_nobody_else() -> None:
    """Another process rang: one claim now (the poll is a minute), not one per idle worker;
    nobody idle, a nudge is nothing."""
    deliverer = CountingClaims()
    workers = Workers(deliverer, 4, owner="t", poll=60)  # type: ignore[arg-type]
    workers.start()
    try:
        assert until_idle(workers, 4)
        time.sleep(0.2)
        before = len(deliverer.calls)
        workers.nudge()
        deadline = time.monotonic() + 10
        while len(deliverer.calls) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert len(deliverer.calls) == before + 1  # the poller only; it found nothing
        assert until_idle(workers, 4)
    finally:
        workers.stop(timeout=5)
    idle = Workers(deliverer, 0, owner="t", poll=60)  # type: ignore[arg-type]
    idle.nudge()
    assert not idle._nudged


class Recording(CountingClaims):
    """Records what is given back to the queue as well."""

    def __init__(self) -> None:
        super().__init__()
        self.released: list[list[object]] = []

    def release(self, batch: list[object]) -> None:
        self.released.append(batch)


def test_a_batch_handed_over_as_the_workers_stop_is_delivered_or_given_back_once() -> None:
    """Handed over, then the stop at once, in every order the threads allow: the batch is
    delivered or back in the queue, once, never left claimed until its lease runs out."""
    for attempt in range(30):
        deliverer = Recording()
        workers = idle_workers(deliverer, 2)
        assert workers.reserve() == "t"
        batch = [f"message {attempt}"]
        workers.hand_over(batch)  # type: ignore[arg-type]
        workers.stop(timeout=5)
        assert (deliverer.held + deliverer.released).count(batch) == 1, attempt
