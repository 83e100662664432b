"""Queue workers (DESIGN.md step 5): claim, deliver, record.

A worker claims a batch of due recipients (``spool.queue.claim``), delivers each message's
recipients together, then records every outcome in **one** transaction (fewer commits; the
de-duplication below makes that safe):

- LOCAL and SENT recipients: one LMTP transaction (RFC 2033) for the message's local
  recipients and the sender's copy (``address+Sent``, Dovecot's detail delivery).
- PEER and CLEAR recipients: one SMTP session per peer domain (``gateway.deliver.outbound``).
- NOTIFY recipients: one notice each through the smarthost (``gateway.deliver.notify``); a failure
  is
  retried and counted, and never touches the secure delivery it follows.

**De-duplication after a crash.** A row a dead worker left DELIVERING is taken over once its
lease expires, flagged ``in_doubt``: the mail store may hold it already. Dovecot's LMTP does not
de-duplicate, so before delivering such a row again the worker asks the mail store whether the
mailbox folder holds that Message-ID (``gateway.deliver.probes``: ``doveadm search`` on the
store's host, IMAP from another host; only on this rare path, an exact match of the field).
The same holds for a row deferred because Dovecot went silent after taking the data
(``Result.uncertain``: an LMTP process that died between two recipients of one transaction,
seen when first deliveries create the mailboxes concurrently).
Peer rows in doubt are sent again: the peer de-duplicates by (Message-ID, recipient) on its side.

Temporary failures retry with exponential backoff (``retry_base_seconds`` doubling, capped at
one hour) until ``delivery_expiry_hours``; then, or on a permanent failure, the recipient is
bounced and the sender gets a DSN (``gateway.deliver.reports``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from core import audit
from core.db import utcnow
from gateway.accept.context import Dispatch, Gateway
from gateway.deliver import reports
from gateway.deliver.dsn import Failure
from gateway.deliver.notify import Notifier, build_notice
from gateway.deliver.outbound import Outbound, PeerNotTrusted, PeerTlsFailure, PeerUnavailable
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from mailstore.lmtp import Result
from mailstore.stores import Delivers
from spool import queue as q
from spool.doorbell import Doorbell
from spool.models import Origin, RecipientKind, RecipientState
from spool.queue import Claimed, Row

log = logging.getLogger("mss.gateway")
BATCH = 48
_FINAL = {"bounced": RecipientState.BOUNCED, "failed": RecipientState.FAILED}


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    row: Row
    status: str  # delivered | deferred | bounced | failed | released (not attempted)
    code: str  # reply code, e.g. "250", "550"
    enhanced: str = ""  # RFC 3463, for the DSN
    reason: str = ""  # the remote reply or our reason, one line, no content
    in_doubt: bool = False  # deferred, but the store may hold it (no reply after the data)
    # Where the time went (seconds; Postfix's ``delays=``): from acceptance to the start of
    # this message's attempt (the queue, and the batch's earlier messages), and the attempt.
    waited: float = 0.0
    took: float = 0.0


def _result(claimed: Claimed, row: Row, result: Result) -> Outcome:
    if result.delivered:
        return Outcome(claimed, row, "delivered", str(result.code))
    error = result.error
    permanent = bool(error is not None and error.permanent)
    enhanced = getattr(error, "enhanced", "") or ("5.0.0" if permanent else "4.0.0")
    return Outcome(claimed, row, "bounced" if permanent else "deferred", str(result.code),
                   enhanced, " ".join(result.text.split())[:300],
                   in_doubt=result.uncertain and not permanent)


class Leases:
    """The heartbeat of the batches out (``spool.queue.renew``): every third of the lease, one
    UPDATE pushes back the lease of every batch this Deliverer's workers hold. One thread,
    alive only while a batch is held."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._held: dict[str, int] = {}
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, token: str) -> Iterator[None]:
        with self._lock:
            self._held[token] = self._held.get(token, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="lease-renewal",
                                                daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held[token] -= 1
                if not self._held[token]:
                    del self._held[token]
                self._lock.notify_all()

    def _beat(self) -> None:
        lease = self.gw.settings.queue_lease_seconds
        while True:
            with self._lock:
                self._lock.wait(lease / 3)
                tokens = list(self._held)
                if not tokens:
                    self._thread = None
                    return
            try:
                q.renew(self.gw.db, tokens, lease)
            except Exception:  # noqa: BLE001 — the next beat tries again; fencing covers a miss
                log.exception("livraison : renouvellement du bail en échec")


class Deliverer:
    """One batch at a time; thread-safe (each call has its own claim)."""

    def __init__(self, gw: Gateway, metrics: Metrics, *, lmtp: Delivers, outbound: Outbound,
                 notifier: Notifier | None,
                 probe: Callable[[str, str, str, datetime], bool | None]) -> None:
        self.gw, self.metrics, self.lmtp = gw, metrics, lmtp
        self.outbound, self.notifier, self.probe = outbound, notifier, probe
        self.leases = Leases(gw)

    def run_once(self, owner: str, limit: int = BATCH, share: int = 1) -> int:
        """Claim (``share``: how many workers share the backlog, ``spool.queue.claim``),
        deliver and record one batch; the number of recipients handled."""
        lease = self.gw.settings.queue_lease_seconds
        started = time.monotonic()
        batch = q.claim(self.gw.db, owner, limit=limit, lease_seconds=lease, share=share)
        self.metrics.claim_seconds.labels(found="yes" if batch else "no").observe(
            time.monotonic() - started)
        return self.run_held(batch)

    def run_held(self, batch: list[Claimed]) -> int:
        """Deliver and record ``batch``, claimed by ``run_once`` or at acceptance
        (``spool.queue.enqueue``'s ``hold``); the number of recipients handled."""
        if not batch:
            return 0
        # The lease is renewed while the batch is out (``Leases``), so a slow peer or mail
        # store does not let another worker take the rows over; past half the lease (counted
        # from the claim) the rest of the batch is handed back all the same, so that one slow
        # batch does not hold the others' messages.
        lease = self.gw.settings.queue_lease_seconds
        since = min(max((utcnow() - c.claimed_at).total_seconds(), 0.0) for c in batch)
        deadline = time.monotonic() + lease / 2 - since
        outcomes = []
        with self.leases.holding(batch[0].token):
            for claimed in batch:
                if time.monotonic() < deadline:
                    outcomes += self.timed(claimed)
                else:
                    outcomes += [Outcome(claimed, row, "released", "") for row in claimed.rows]
            if outcomes:
                started = time.monotonic()
                self.finish(batch, outcomes)
                self.metrics.record_seconds.observe(time.monotonic() - started)
        return len(outcomes)

    def release(self, batch: list[Claimed]) -> None:
        """Give ``batch`` back to the queue unattempted (due again at once, not in doubt)."""
        self.finish(batch, [Outcome(c, row, "released", "", reason="non tenté (arrêt)")
                            for c in batch for row in c.rows])

    def timed(self, claimed: Claimed) -> list[Outcome]:
        """``deliver``, each outcome carrying where its time went (``Outcome.waited``,
        ``Outcome.took``)."""
        waited = max((utcnow() - claimed.created_at).total_seconds(), 0.0)
        started = time.monotonic()
        outcomes = self.deliver(claimed)
        took = time.monotonic() - started
        return [replace(o, waited=waited, took=took) for o in outcomes]

    def deliver(self, claimed: Claimed) -> list[Outcome]:
        local = [r for r in claimed.rows if r.kind in (RecipientKind.LOCAL, RecipientKind.SENT)]
        peers: dict[tuple[str, RecipientKind], list[Row]] = defaultdict(list)
        for row in claimed.rows:
            if row.kind in (RecipientKind.PEER, RecipientKind.CLEAR):
                peers[(row.address.rpartition("@")[2], row.kind)].append(row)
        out = self._local(claimed, local) if local else []
        for (domain, kind), rows in peers.items():
            out += self._peer(claimed, domain, kind, rows)
        out += [self._notify(claimed, r) for r in claimed.rows if r.kind is RecipientKind.NOTIFY]
        return out

    # ------------------------------------------------------------------ the three ways
    def _local(self, claimed: Claimed, rows: list[Row]) -> list[Outcome]:
        if claimed.raw_local is None:
            return [Outcome(claimed, r, "failed", "554", "5.3.0", "pas de forme locale")
                    for r in rows]
        out, targets = [], {}
        for row in rows:
            folder = "Sent" if row.kind is RecipientKind.SENT else "INBOX"
            if row.in_doubt:
                held = self.probe(row.address, folder, claimed.message_key,
                                  claimed.created_at)
                log.info("livraison incertaine de %s (%s) : %s", claimed.message_key, folder,
                         {True: "déjà dans la boîte", False: "absente, livrée à nouveau",
                          None: "boîte illisible, nouvel essai plus tard"}[held])
                if held:
                    out.append(Outcome(claimed, row, "delivered", "250", reason="déjà livré"))
                    continue
                if held is None:
                    out.append(Outcome(claimed, row, "deferred", "451", "4.3.0",
                                       "vérification de la boîte impossible", in_doubt=True))
                    continue
            local, _, domain = row.address.rpartition("@")
            targets[f"{local}+Sent@{domain}" if folder == "Sent" else row.address] = row
        if targets:
            results = self.lmtp.deliver(claimed.raw_local, claimed.envelope_from, list(targets))
            out += [_result(claimed, targets[t], r) for t, r in results.items()]
        return out

    def _peer(self, claimed: Claimed, domain: str, kind: RecipientKind,
              rows: list[Row]) -> list[Outcome]:
        raw = claimed.raw_clear if kind is RecipientKind.CLEAR else claimed.raw_peer
        if raw is None:
            return [Outcome(claimed, r, "failed", "554", "5.3.0", "pas de forme pair")
                    for r in rows]
        try:
            replies = self.outbound.send(domain, raw, claimed.envelope_from,
                                         [r.address for r in rows])
        except (PeerUnavailable, PeerNotTrusted) as exc:
            if isinstance(exc, PeerTlsFailure):
                self.metrics.tls_failures.labels(peer=domain).inc()
            status = "bounced" if exc.permanent else "deferred"
            return [Outcome(claimed, r, status, str(exc.smtp_code), exc.enhanced, exc.message)
                    for r in rows]
        out = []
        for row in rows:
            reply = replies[row.address]
            status = ("delivered" if reply.code < 300 else
                      "deferred" if reply.code < 500 else "bounced")
            out.append(Outcome(claimed, row, status, str(reply.code), reply.enhanced,
                               " ".join(reply.text.split())[:300]))
        return out

    def _notify(self, claimed: Claimed, row: Row) -> Outcome:
        s = self.gw.settings
        if self.notifier is None:
            return Outcome(claimed, row, "failed", "554", "5.3.0", "pas de smarthost configuré")
        url = s.webmail_url or f"https://{s.hostname}:{s.web_port}/"
        try:
            notice = build_notice(to=row.address, from_addr=f"ne-pas-repondre@{s.domain}",
                                  webmail_url=url, message_date=claimed.created_at)
            self.notifier.send(row.address, notice)
        except ValueError as exc:
            return Outcome(claimed, row, "failed", "554", "5.1.3", str(exc))
        except GatewayError as exc:
            self.metrics.notify_failures.inc()
            return Outcome(claimed, row, "deferred", str(exc.smtp_code), exc.enhanced,
                           exc.message)
        return Outcome(claimed, row, "delivered", "250")

    # ------------------------------------------------------------------ recording
    def finish(self, batch: list[Claimed], outcomes: list[Outcome]) -> None:
        """Record every outcome, queue follow-ups and DSNs, purge finished messages — one
        transaction for the batch."""
        outcomes = [self._expire(o) for o in outcomes]
        done = [self._done(o) for o in outcomes]
        s = self.gw.settings
        with q.writing(self.gw.db) as session, session.no_autoflush:
            recorded = {id(d) for d in q.record(session, done)}
            if len(recorded) < len(done):  # the process stalled past a lease (see Leases)
                log.warning("livraison : %d destinataire(s) repris par un autre processus "
                            "(bail expiré) : leur issue est la sienne", len(done) - len(recorded))
                pairs = [(d, o) for d, o in zip(done, outcomes, strict=True) if id(d) in recorded]
                done, outcomes = [d for d, _ in pairs], [o for _, o in pairs]
            failures: dict[str, list[Failure]] = defaultdict(list)
            for d, o in zip(done, outcomes, strict=True):
                if d.state is RecipientState.BOUNCED:
                    failures[o.claimed.queue_id].append(Failure(
                        o.row.address, o.enhanced or "5.0.0", f"{o.code} {o.reason}".strip()))
            for claimed in batch:
                mine = [d for d in done if d.claimed is claimed]
                local = [d.row for d in mine if d.state is RecipientState.DELIVERED
                         and d.row.kind is RecipientKind.LOCAL]
                if local:
                    reports.after_local(session, s, claimed, local)
                reports.send_dsn(session, s, claimed, failures.get(claimed.queue_id, []))
                if mine:
                    audit.record(session, actor="gateway", action="delivery",
                                 target=claimed.queue_id, outcome=_overall(mine),
                                 request={d.row.address + ("/Sent" if d.row.kind is
                                          RecipientKind.SENT else ""): f"{d.state.value} {d.code}"
                                          for d in mine})
            q.purge_done(session, [c.queue_id for c in batch])
        for outcome in outcomes:
            self._count(outcome)

    def _expire(self, o: Outcome) -> Outcome:
        limit = timedelta(hours=self.gw.settings.delivery_expiry_hours)
        if o.status == "deferred" and utcnow() - o.claimed.created_at > limit:
            return Outcome(o.claimed, o.row, "bounced", o.code, "4.4.7",
                           f"délai de remise dépassé / delivery time expired ({o.reason})")
        return o

    def _done(self, o: Outcome) -> q.Done:
        c, row = o.claimed, o.row
        if o.status == "delivered":
            return q.Done(c, row, RecipientState.DELIVERED, o.code, o.reason)
        if o.status == "deferred":
            delay = q.backoff(row.attempts, self.gw.settings.retry_base_seconds)
            return q.Done(c, row, RecipientState.QUEUED, o.code, o.reason, delay,
                          in_doubt=o.in_doubt)
        if o.status == "released":  # not attempted: due again at once
            return q.Done(c, row, RecipientState.QUEUED, "",
                          o.reason or "non tenté (lot trop long)")
        # A DSN for real recipients only: not for the Sent copy, a notice, or a report.
        reportable = (o.status == "bounced" and c.origin not in (Origin.DSN, Origin.MDN) and
                      row.kind in (RecipientKind.LOCAL, RecipientKind.PEER, RecipientKind.CLEAR))
        state = RecipientState.BOUNCED if reportable else RecipientState.FAILED
        return q.Done(c, row, state, o.code, o.reason)

    def _count(self, o: Outcome) -> None:
        kind = o.row.kind.value
        if o.status == "delivered":
            self.metrics.delivered.labels(kind=kind).inc()
            age = (utcnow() - o.claimed.created_at).total_seconds()
            self.metrics.latency.labels(kind=kind).observe(max(age, 0.0))
            self.metrics.stage.labels(kind=kind, stage="queue").observe(o.waited)
            self.metrics.stage.labels(kind=kind, stage="attempt").observe(o.took)
        elif o.status == "released":
            return
        elif o.status == "deferred":
            self.metrics.deferred.labels(kind=kind).inc()
        else:
            self.metrics.bounced.labels(kind=kind).inc()


def _overall(done: list[q.Done]) -> str:
    states = {d.state for d in done}
    return states.pop().value if len(states) == 1 else "mixed"


class Workers(Dispatch):
    """``count`` threads running ``Deliverer.run_once``; a message just accepted is handed
    straight to an idle one (``Dispatch``), else they are woken when something is queued.
    For what no wake-up announces (another process's messages, retries falling due), one idle
    thread at a time polls the queue every ``poll`` seconds, not each of them: eight idle
    workers made sixteen empty claims a second per gateway process. A claim that finds
    something wakes the other idle threads: more may be waiting (a backlog: messages accepted
    while every worker was busy or promised; README « Hand-off at acceptance »).
    A message queued that no worker here could take rings the other processes' ``bell``
    (``spool.doorbell``): their polling thread claims it at once (``nudge``)."""

    def __init__(self, deliverer: Deliverer, count: int, owner: str, poll: float = 0.5,
                 bell: Doorbell | None = None) -> None:
        self.deliverer, self.count, self.owner, self.poll = deliverer, count, owner, poll
        self.bell = bell
        # A claim takes one worker's share of the messages due, at most a share of a batch:
        # the first worker to wake must not take the whole backlog, one message after the
        # other, while the others sit idle (issue #19: submit → visible over IMAP).
        self.batch = max(2, BATCH // max(1, count))
        self._cond = threading.Condition()
        self._handed: deque[list[Claimed]] = deque()
        self._idle = 0  # threads waiting for work
        self._promised = 0  # reservations whose batch is not handed over yet
        self._wakes = 0
        self._poller: str | None = None  # the idle thread that polls (``_wait``)
        self._nudged = False  # another process rang: the poller claims now
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def idle(self) -> int:
        """Threads waiting for work now (``mss_delivery_workers_idle``)."""
        return self._idle

    # ------------------------------------------------------------------ Dispatch
    def reserve(self) -> str | None:
        """This process's owner name when a worker is idle and not promised to another
        message, else None (the message is then claimed from the queue)."""
        with self._cond:
            if self._stop.is_set() or self._idle <= self._promised + len(self._handed):
                return None
            self._promised += 1
            return self.owner

    def hand_over(self, batch: list[Claimed]) -> None:
        with self._cond:
            self._promised -= 1
            if batch and not self._stop.is_set():
                self._handed.append(batch)
                self._cond.notify_all()  # the one that takes it is whoever gets the lock
                return
        if batch:  # stopping: back to the queue for whoever runs next
            self.deliverer.release(batch)

    def queued(self) -> None:
        self.wake()
        if self.bell is not None:
            self.deliverer.metrics.rings.labels("sent").inc()
            self.bell.ring()

    def wake(self) -> None:
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def nudge(self) -> None:
        """Another process queued a message its workers could not take: the polling thread
        claims now, not at the end of its ``poll`` (the others stay asleep: it wakes them if
        it finds more than it takes, ``_loop``). Nobody idle: nothing to do, a busy worker
        claims again when its delivery ends."""
        self.deliverer.metrics.rings.labels("heard").inc()
        with self._cond:
            if self._idle:
                self._nudged = True
                self._cond.notify_all()

    # ------------------------------------------------------------------ threads
    def start(self) -> None:
        if self.bell is not None:
            self.bell.listen(self.nudge)
        for index in range(self.count):
            thread = threading.Thread(target=self._loop, args=(f"{self.owner}-{index}",),
                                      name=f"delivery-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads; a batch handed over and not started goes back to the queue."""
        self._stop.set()
        if self.bell is not None:
            self.bell.close()
        self.wake()
        for thread in self._threads:
            thread.join(timeout)
        with self._cond:
            left = list(self._handed)
            self._handed.clear()
        for batch in left:
            self.deliverer.release(batch)

    def _loop(self, owner: str) -> None:
        handed: list[Claimed] | None = None
        while not self._stop.is_set():
            # A wake-up counted from before the claim: one that comes between an empty claim
            # and the wait below is not lost (the message would wait for the next poll).
            wakes = self._wakes
            batch, handed = handed or self._take(), None
            try:
                if batch is not None:
                    self.deliverer.metrics.handed.inc(len(batch))
                    done = self.deliverer.run_held(batch)
                else:
                    done = self.deliverer.run_once(owner, self.batch, self.count)
                    if done and self._idle:
                        # Found in the queue, not handed over: a backlog (this process's
                        # workers were busy, or another process accepted it) that the idle
                        # ones must share, not leave to the poller alone.
                        self.wake()
            except Exception:  # noqa: BLE001 — a worker never dies; the lease retakes rows
                log.exception("livraison : lot en échec")
                self._stop.wait(1.0)
                done = 0
            if not done and not self._stop.is_set():
                handed = self._wait(owner, wakes)
        if handed is not None:  # taken from the hand-over as the stop came: back to the queue
            self.deliverer.release(handed)

    def _take(self) -> list[Claimed] | None:
        with self._cond:
            return self._handed.popleft() if self._handed else None

    def _wait(self, me: str, wakes: int) -> list[Claimed] | None:
        """Until a batch is handed over (returned, taken under the lock, so that the threads
        woken with it do not each go and claim), a wake-up since ``wakes`` was read, or the
        stop; and for the one polling thread, ``poll`` seconds. The poller that leaves wakes
        the others so that one of them polls in its place."""
        with self._cond:
            self._idle += 1
            deadline: float | None = None
            try:
                while not (self._wakes != wakes or self._stop.is_set()):
                    if self._handed:
                        return self._handed.popleft()
                    if self._poller is None:
                        self._poller, deadline = me, time.monotonic() + self.poll
                    if self._poller != me:
                        self._cond.wait()
                        continue
                    assert deadline is not None
                    left = deadline - time.monotonic()
                    if left <= 0 or self._nudged:
                        self._nudged = False
                        return None  # time to look at the queue
                    self._cond.wait(left)
                return None
            finally:
                self._idle -= 1
                if self._poller == me:
                    self._poller = None
                    self._cond.notify_all()
