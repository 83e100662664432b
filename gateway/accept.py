"""The use cases behind the SMTP commands: each runs the pipeline steps in order inside short
transactions and returns what the handler needs to reply (CONVENTIONS.md, 1 and 6).

They are synchronous (database, crypto) and run in the handler's thread pool. Crypto runs
outside any transaction: on SQLite every transaction holds the write lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from certs.errors import CertError
from certs.validation import TrustStore, ValidationCache, validate
from core import audit
from core.db import Database
from core.oidc import Provider
from core.settings import Settings
from gateway import inbound, pipeline
from gateway.errors import MalformedHeader, SenderRefused, SignatureRefused
from gateway.keys import KeyRing
from gateway.pipeline import Forms, Route, SecurityContext
from mailformat import authresults, headers
from mailformat.headers import Head
from spool import queue as q
from spool.events import SmtpAction
from spool.models import Origin, RecipientKind, RecipientState
from trust_space.naming import normalise_dn
from trust_space.policy import Identity

log = logging.getLogger("mss.gateway")


class Trust:
    """Our CA plus the peers' (``TrustStore.with_peers``), re-read when a file under
    ``pki/`` changes (a new peer trusted, a CRL published), checked at most every 2 s."""

    def __init__(self, pki_dir: Path) -> None:
        self.pki_dir = pki_dir
        self._lock = threading.Lock()
        self._sig: tuple[tuple[str, float], ...] = ()
        self._store: TrustStore | None = None
        self._checked = 0.0

    def signature(self) -> tuple[tuple[str, float], ...]:
        paths = [self.pki_dir / "ca.pem", self.pki_dir / "crl.pem",
                 *sorted((self.pki_dir / "peers").glob("*.pem"))]
        return tuple((str(p), p.stat().st_mtime) for p in paths if p.exists())

    def store(self) -> TrustStore:
        with self._lock:
            now = time.monotonic()
            if self._store is None or now - self._checked > 2:
                self._checked = now
                sig = self.signature()
                if sig != self._sig or self._store is None:
                    self._store, self._sig = TrustStore.with_peers(self.pki_dir), sig
            return self._store

    def version(self) -> tuple[tuple[str, float], ...]:
        """Changes when the trust files change (TLS contexts are rebuilt then)."""
        self.store()
        return self._sig


class Decisions:
    """Recent grants of the MAIL FROM and RCPT TO steps, kept ``ttl`` seconds: a practice
    software sends its batch as one identity to a few recipients, and each command would
    otherwise be a database round trip through the thread pool. Only grants are kept (a
    refusal is always asked again); ``ttl`` 0 keeps nothing. Bounded: cleared when full."""

    def __init__(self, ttl: float, size: int = 4096) -> None:
        self.ttl, self.size = ttl, size
        self._grants: dict[tuple[object, ...], tuple[float, object]] = {}

    def get(self, key: tuple[object, ...]) -> object | None:
        hit = self._grants.get(key)
        return hit[1] if hit is not None and time.monotonic() < hit[0] else None

    def put(self, key: tuple[object, ...], value: object) -> None:
        if self.ttl <= 0:
            return
        if len(self._grants) >= self.size:
            self._grants.clear()
        self._grants[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        self._grants.clear()


@dataclass
class Gateway:
    """What the use cases share: settings, database, keys, trust, the identity provider whose
    access tokens open AUTH (None when no ``oidc_issuer``), and a hook to wake the delivery
    workers when something was queued."""

    settings: Settings
    db: Database
    keys: KeyRing
    trust: Trust
    wake: Callable[[], None] = lambda: None
    chain: list[x509.Certificate] = field(default_factory=list)
    checks: ValidationCache = field(default_factory=ValidationCache)
    decisions: Decisions = field(init=False)
    seal_key: bytes = field(init=False, repr=False)
    provider: Provider | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.decisions = Decisions(self.settings.policy_cache_seconds)
        self.seal_key = authresults.key_for(self.settings)
        self.provider = Provider(self.settings) if self.settings.oidc_issuer else None

    def sealed(self, stamped: Head | None) -> bytes | None:
        """A local form (our stamp first) with its verdict sealed for the readers."""
        if stamped is None:
            return None
        return authresults.seal(stamped, self.seal_key, datetime.now(UTC)).raw

    @property
    def authserv_id(self) -> str:
        # RFC 8601 §2.5: names the ADMD that checked; our domain is unique per operator.
        return self.settings.domain

    def security(self) -> SecurityContext:
        s = self.settings
        return SecurityContext(s.security_policy, s.allow_tls_only_peers,
                               self.trust.store(), self.authserv_id, self.chain, self.checks)


@dataclass
class Envelope:
    """The transaction as the handler collected it."""

    mail_from: str
    routes: list[Route]
    raw: bytes
    helo: str
    ip: str
    tls: str


def check_header(raw: bytes | Head) -> Head:
    """The message cut once, its header section one that every reader reads the same way
    (``mailformat.headers.checked``): the first content step, before anything is signed or
    stamped (issue #14 item 1). The next steps read and change this cut."""
    try:
        return headers.checked(raw)
    except headers.HeaderError as exc:
        raise MalformedHeader(exc.message) from None


# ---------------------------------------------------------------------- submission
def known_sender(gw: Gateway, identity: Identity, address: str) -> bool:
    """True when ``sender`` granted this recently (``Decisions``): no database needed."""
    return gw.decisions.get(("from", identity, address.lower())) is not None


def sender(gw: Gateway, identity: Identity, address: str) -> None:
    """MAIL FROM on the submission ports."""
    with gw.db.reading() as conn:
        pipeline.check_sender(conn, identity, address)
    gw.decisions.put(("from", identity, address.lower()), True)


def known_route(gw: Gateway, address: str, *, local_only: bool = False) -> Route | None:
    """The route ``recipient`` granted recently, if any."""
    route = gw.decisions.get(("rcpt", local_only, address.lower()))
    return route if isinstance(route, Route) else None


def recipient(gw: Gateway, address: str, *, local_only: bool = False) -> Route:
    """RCPT TO."""
    with gw.db.reading() as conn:
        route = pipeline.route_recipient(conn, address, {gw.settings.domain},
                                         local_only=local_only)
    gw.decisions.put(("rcpt", local_only, address.lower()), route)
    return route


def submit(gw: Gateway, login: str, identity: Identity, env: Envelope) -> str:
    """DATA on the submission ports: the queue id once the message is durably queued."""
    s = gw.settings
    head = inbound.strip_forged(check_header(env.raw), gw.authserv_id)
    pipeline.check_loop(head, s.max_received)
    queue_id = q.new_queue_id()
    head, key = pipeline.message_key(head, queue_id, s.domain)
    with gw.db.reading() as conn:
        pipeline.check_from(conn, identity, env.mail_from, head)
        signer = gw.keys.signer(conn, env.mail_from)  # cached after a mailbox's first use
    forms = pipeline.secure(gw.security(), head, signer, env.routes)  # crypto: no transaction
    rcpts = _rows(env.routes, forms) + [(env.mail_from.lower(), RecipientKind.SENT)]
    local, peer, clear = (_traced(gw, form, env, queue_id, True)
                          for form in (gw.sealed(forms.local_head), forms.peer, forms.clear))
    with q.appending(gw.db) as conn:
        q.enqueue(conn, queue_id=queue_id, origin=Origin.SUBMISSION,
                  envelope_from=env.mail_from, message_key=key, submitter=login,
                  size=len(env.raw), local=local, peer=peer, clear=clear, recipients=rcpts,
                  protection=forms.protection)
        audit.record(conn, actor=login, action=SmtpAction.SUBMIT, target=queue_id,
                     outcome="queued", request={**_summary(env, key, forms.protection),
                                                "as": identity.login})
    gw.wake()
    return queue_id


def _rows(routes: Sequence[Route], forms: Forms) -> list[tuple[str, RecipientKind]]:
    rows = []
    for route in routes:
        kind = route.kind
        if kind is RecipientKind.PEER and route.address in forms.clear_recipients:
            kind = RecipientKind.CLEAR
        rows.append((route.address, kind))
    return rows


def _traced(gw: Gateway, raw: bytes | None, env: Envelope, queue_id: str,
            authenticated: bool) -> bytes | None:
    if raw is None:
        return None
    return pipeline.trace(raw, helo=env.helo, ip=env.ip, hostname=gw.settings.hostname,
                          queue_id=queue_id, tls=env.tls, authenticated=authenticated)


def _summary(env: Envelope, key: str, protection: str) -> dict[str, object]:
    return {"from": env.mail_from, "rcpt": [r.address for r in env.routes][:50],
            "size": len(env.raw), "message_id": key[:250], "protection": protection,
            "ip": env.ip}


# ---------------------------------------------------------------------- relay (peers)
def peer_sender(gw: Gateway, cert: x509.Certificate | None, address: str) -> str:
    """MAIL FROM on the relay port: the peer's normalised DN once its certificate validated
    (chain, CRL) and matches the whitelist entry of the sender's domain."""
    if cert is None:
        raise SenderRefused("Certificat client d'opérateur exigé / operator client certificate "
                            "required", code="peer_no_certificate")
    try:
        validate(cert, gw.trust.store(), purpose="client")
    except CertError as exc:
        raise SenderRefused(f"Certificat d'opérateur refusé / operator certificate refused : "
                            f"{exc.message}", code=f"peer_{exc.code}") from None
    dn = normalise_dn(cert.subject.rfc4514_string())
    with gw.db.reading() as conn:
        pipeline.check_peer(conn, dn, address)
    return dn


def relay(gw: Gateway, peer_dn: str, env: Envelope) -> str:
    """DATA on the relay port: open (decrypt, verify), stamp, queue for local delivery."""
    head = inbound.strip_forged(check_header(env.raw), gw.authserv_id)
    pipeline.check_loop(head, gw.settings.max_received)
    queue_id = q.new_queue_id()
    head, key = pipeline.message_key(head, queue_id, env.mail_from.rpartition("@")[2] or "peer")
    opened, verdict = _open(gw, head, env.routes)
    if opened is not head:
        opened = check_header(opened)  # the decrypted content's fields: the reader's too
    state = RecipientState.QUEUED
    if verdict.result == "fail":
        if gw.settings.bad_signature == "refuse":
            raise SignatureRefused(f"Signature S/MIME invalide, message refusé / invalid S/MIME "
                                   f"signature, message refused ({verdict.error_code})",
                                   code=f"signature_{verdict.error_code}")
        state = RecipientState.QUARANTINED
    local = _traced(gw, gw.sealed(inbound.stamp(opened, verdict, gw.authserv_id)), env,
                    queue_id, False)
    with q.appending(gw.db) as conn:
        q.enqueue(conn, queue_id=queue_id, origin=Origin.RELAY, envelope_from=env.mail_from,
                  message_key=key, submitter=peer_dn, size=len(env.raw), local=local,
                  recipients=[(r.address, RecipientKind.LOCAL) for r in env.routes],
                  state=state)
        audit.record(conn, actor=peer_dn[:254], action=SmtpAction.RECEIVE,
                     target=queue_id, outcome=state.value,
                     request={**_summary(env, key, verdict.result),
                              "encrypted": verdict.encrypted})
    gw.wake()
    return queue_id


def _open(gw: Gateway, raw: Head, routes: Sequence[Route]) -> tuple[Head, inbound.Verdict]:
    """Open with the first local recipient key that can (one envelope serves them all)."""
    store = gw.trust.store()
    result: tuple[Head, inbound.Verdict] | None = None
    for route in routes:
        with gw.db.reading() as conn:
            pair = gw.keys.signer(conn, route.address)
        result = inbound.open_message(raw, key=pair, store=store)
        if result[1].error_code not in ("decrypt_failed", "no_key"):
            return result
    return result or inbound.open_message(raw, key=None, store=store)
