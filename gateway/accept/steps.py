"""The acceptance of a message as data: a named, ordered list of steps per channel
(``SUBMISSION``, ``RELAY``), each a small function that reads and fills one ``Work``
(CONVENTIONS.md, 5). ``run`` goes through them in order; the first refusal (a
``GatewayError`` that knows its SMTP reply) stops the message before anything is queued.

The steps are synchronous (database, crypto) and run in the handler's thread pool; crypto
runs outside any transaction (on SQLite every transaction holds the write lock). The header
is cut once (``header``) and every later step reads and changes that cut.

==============  =========================================================  ==================
step            what                                                       module
==============  =========================================================  ==================
``header``      cut once, one reading for every reader; forged A-R off     mailformat.headers
``loop``        Received fields ≤ ``max_received``                         checks
``key``         queue id; Message-ID (added when missing), the dedup key;  checks
                submission: Date added when missing
``from``        submission: From: mailboxes the identity may use; signer   checks, keys
``secure``      submission: sign / encrypt / stamp the local form          forms
``open``        relay: decrypt with a local key, verify, stamp             opening
``verdict``     relay: a bad signature is refused or quarantined           settings
``trace``       the Received field on each form; the local form sealed     checks, authresults
``queue``       durably queued with its audit line, the workers woken      spool.queue
==============  =========================================================  ==================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from core import audit
from gateway.accept import checks, forms, opening
from gateway.accept.context import Envelope, Gateway
from gateway.accept.forms import Forms
from gateway.accept.keys import Pair
from gateway.errors import MalformedHeader, SignatureRefused
from mailformat import headers
from mailformat.headers import Head
from spool import queue as q
from spool.events import SmtpAction
from spool.models import Origin, RecipientKind, RecipientState
from spool.queue import Claimed
from trust_space.policy import Identity


@dataclass
class Work:
    """One message on its way through the steps: what each step leaves for the next."""

    gw: Gateway
    env: Envelope
    submitter: str  # the login (submission) or the peer's DN (relay)
    identity: Identity | None = None  # submission: who sends
    head: Head = field(init=False)
    queue_id: str = ""
    key: str = ""
    signer: Pair | None = None
    forms: Forms = field(default_factory=Forms)
    verdict: opening.Verdict | None = None
    state: RecipientState = RecipientState.QUEUED
    local: bytes | None = None
    peer: bytes | None = None
    clear: bytes | None = None

    @property
    def authenticated(self) -> bool:
        return self.identity is not None


@dataclass(frozen=True)
class Step:
    """One named unit of the acceptance."""

    name: str
    run: Callable[[Work], None]


def run(steps: tuple[Step, ...], work: Work) -> str:
    """Every step in order; the queue id once the message is durably queued."""
    for step in steps:
        step.run(work)
    return work.queue_id


def check_header(raw: bytes | Head) -> Head:
    """The message cut once, its header section one that every reader reads the same way
    (``mailformat.headers.checked``): the first content step, before anything is signed or
    stamped (issue #14 item 1). The next steps read and change this cut."""
    try:
        return headers.checked(raw)
    except headers.HeaderError as exc:
        raise MalformedHeader(exc.message) from None


# ---------------------------------------------------------------------- the steps
def _header(w: Work) -> None:
    w.head = opening.strip_forged(check_header(w.env.raw), w.gw.authserv_id)


def _loop(w: Work) -> None:
    checks.check_loop(w.head, w.gw.settings.max_received)


def _key(w: Work) -> None:
    w.queue_id = q.new_queue_id()
    if w.authenticated:
        domain = w.gw.settings.domain
    else:
        domain = w.env.mail_from.rpartition("@")[2] or "peer"
    head, w.key = checks.message_key(w.head, w.queue_id, domain)
    w.head = Head.of(head)
    if w.authenticated:  # a submission: Date added when missing (a relayed message is kept)
        w.head = checks.dated(w.head)


def _from(w: Work) -> None:
    assert w.identity is not None
    with w.gw.db.reading() as conn:
        checks.check_from(conn, w.identity, w.env.mail_from, w.head)
        w.signer = w.gw.keys.signer(conn, w.env.mail_from)  # cached after a first use


def _secure(w: Work) -> None:
    w.forms = forms.secure(w.gw.security(), w.head, w.signer, w.env.routes)


def _open(w: Work) -> None:
    """Open with the first local recipient key that can (one envelope serves them all)."""
    store = w.gw.trust.store()
    result: tuple[Head, opening.Verdict] | None = None
    for route in w.env.routes:
        with w.gw.db.reading() as conn:
            pair = w.gw.keys.signer(conn, route.address)
        result = opening.open_message(w.head, key=pair, store=store)
        if result[1].error_code not in ("decrypt_failed", "no_key"):
            break
    opened, w.verdict = result or opening.open_message(w.head, key=None, store=store)
    if opened is not w.head:
        opened = check_header(opened)  # the decrypted content's fields: the reader's too
    w.forms = Forms(local_head=opening.stamp(opened, w.verdict, w.gw.authserv_id))


def _verdict(w: Work) -> None:
    assert w.verdict is not None
    if w.verdict.result != "fail":
        return
    if w.gw.settings.bad_signature == "refuse":
        raise SignatureRefused(f"Signature S/MIME invalide, message refusé / invalid S/MIME "
                               f"signature, message refused ({w.verdict.error_code})",
                               code=f"signature_{w.verdict.error_code}")
    w.state = RecipientState.QUARANTINED


def _trace(w: Work) -> None:
    def traced(raw: bytes | None) -> bytes | None:
        if raw is None:
            return None
        env = w.env
        return checks.trace(raw, helo=env.helo, ip=env.ip, hostname=w.gw.settings.hostname,
                            queue_id=w.queue_id, tls=env.tls, authenticated=w.authenticated)
    w.local = traced(w.gw.sealed(w.forms.local_head))
    w.peer, w.clear = traced(w.forms.peer), traced(w.forms.clear)


def _summary(w: Work, protection: str) -> dict[str, object]:
    env = w.env
    return {"from": env.mail_from, "rcpt": [r.address for r in env.routes][:50],
            "size": len(env.raw), "message_id": w.key[:250], "protection": protection,
            "ip": env.ip}


@contextmanager
def _queueing(w: Work) -> Iterator[tuple[Connection, q.Hold | None, list[Claimed]]]:
    """The DATA transaction that queues the message, then its way to a delivery worker: handed
    straight to an idle worker of this process with its rows claimed in the same transaction
    (``Dispatch.reserve``/``hand_over``; no claim transaction, no wake-up), or the workers of
    every gateway process woken to claim it (``Dispatch.queued``). The caller appends what
    ``enqueue`` claimed to the list; it is handed over only once the transaction committed."""
    dispatch = w.gw.dispatch
    owner = dispatch.reserve()
    hold = q.Hold(q.lease_token(owner), w.gw.settings.queue_lease_seconds) if owner else None
    held: list[Claimed] = []
    committed: list[Claimed] = []
    try:
        with q.appending(w.gw.db) as conn:
            yield conn, hold, held
        committed = held
    finally:
        if owner is not None:
            dispatch.hand_over(committed)
    if not committed:
        dispatch.queued()


def _queue_submission(w: Work) -> None:
    assert w.identity is not None
    env, f = w.env, w.forms
    rcpts = [(r.address, RecipientKind.CLEAR if r.kind is RecipientKind.PEER
              and r.address in f.clear_recipients else r.kind) for r in env.routes]
    rcpts.append((env.mail_from.lower(), RecipientKind.SENT))
    with _queueing(w) as (conn, hold, held):
        held += q.enqueue(conn, queue_id=w.queue_id, origin=Origin.SUBMISSION,
                          envelope_from=env.mail_from, message_key=w.key,
                          submitter=w.submitter, size=len(env.raw), local=w.local,
                          peer=w.peer, clear=w.clear, recipients=rcpts,
                          protection=f.protection, hold=hold)
        audit.record(conn, actor=w.submitter, action=SmtpAction.SUBMIT, target=w.queue_id,
                     outcome="queued", request={**_summary(w, f.protection),
                                                "as": w.identity.login})


def _queue_relayed(w: Work) -> None:
    assert w.verdict is not None
    env = w.env
    with _queueing(w) as (conn, hold, held):
        held += q.enqueue(conn, queue_id=w.queue_id, origin=Origin.RELAY,
                          envelope_from=env.mail_from, message_key=w.key,
                          submitter=w.submitter, size=len(env.raw), local=w.local,
                          recipients=[(r.address, RecipientKind.LOCAL) for r in env.routes],
                          state=w.state, quarantine_reason=w.verdict.error_code or "",
                          hold=hold)
        audit.record(conn, actor=w.submitter[:254], action=SmtpAction.RECEIVE,
                     target=w.queue_id, outcome=w.state.value,
                     request={**_summary(w, w.verdict.result),
                              "encrypted": w.verdict.encrypted})


HEADER, LOOP, KEY = Step("header", _header), Step("loop", _loop), Step("key", _key)
TRACE = Step("trace", _trace)

SUBMISSION: tuple[Step, ...] = (
    HEADER, LOOP, KEY, Step("from", _from), Step("secure", _secure), TRACE,
    Step("queue", _queue_submission))

RELAY: tuple[Step, ...] = (
    HEADER, LOOP, KEY, Step("open", _open), Step("verdict", _verdict), TRACE,
    Step("queue", _queue_relayed))
