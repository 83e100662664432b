"""What the acceptance use cases share: the gateway's context (settings, database, keys, trust,
recent grants) and the envelope a handler collected."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from sqlalchemy.exc import SQLAlchemyError

from certs.validation import TrustStore, ValidationCache
from core.db import Database
from core.oidc import Provider
from core.settings import Settings
from gateway.accept.checks import Route
from gateway.accept.forms import SecurityContext
from gateway.accept.keys import KeyRing
from mailformat import authresults
from mailformat.headers import Head
from spool.queue import Claimed
from trust_space import changes

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
    refusal is always asked again); ``ttl`` 0 keeps nothing. Bounded: cleared when full.

    Forgotten at once when the directory changes (``DirectoryWatch``). A grant read from the
    database before such a change is not kept: ``put`` takes the ``generation`` seen before
    the read, and drops the grant when a ``clear`` came in between."""

    def __init__(self, ttl: float, size: int = 4096) -> None:
        self.ttl, self.size = ttl, size
        self.generation = 0
        self._grants: dict[tuple[object, ...], tuple[float, object]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> object | None:
        hit = self._grants.get(key)
        return hit[1] if hit is not None and time.monotonic() < hit[0] else None

    def put(self, key: tuple[object, ...], value: object, seen: int | None = None) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if seen is not None and seen != self.generation:
                return
            if len(self._grants) >= self.size:
                self._grants.clear()
            self._grants[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._grants.clear()


class DirectoryWatch:
    """Reads the directory's change counter (``trust_space.changes``) every ``interval``
    seconds in a thread of its own and clears ``decisions`` when it moved: one small query
    per second and process, instead of one per command."""

    def __init__(self, db: Database, decisions: Decisions, interval: float = 1.0) -> None:
        self.db, self.decisions, self.interval = db, decisions, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="directory-watch", daemon=True)
        self.seen: int | None = None

    def start(self) -> None:
        self.seen = self._read()
        self._thread.start()

    def _read(self) -> int | None:
        try:
            with self.db.reading() as conn:
                return changes.version(conn)
        except SQLAlchemyError:  # the database away for a moment: the TTL still bounds
            log.warning("compteur de l'annuaire illisible : cache des droits vidé")
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            current = self._read()
            if current is None or current != self.seen:
                self.decisions.clear()
            self.seen = current

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


class Dispatch:
    """How a message just queued reaches the delivery workers (``gateway.deliver.workers.
    Workers``; this base: a process without workers). ``reserve`` before the DATA
    transaction: the owner name to lease the message to when one of this process's workers is
    idle, else None; ``hand_over`` after it, exactly once per reservation, with what
    ``spool.queue.enqueue`` claimed (``[]``: nothing, the reservation is given back);
    otherwise ``queued``: the workers, here and in the other gateway processes, claim it from
    the queue."""

    def reserve(self) -> str | None:
        return None

    def hand_over(self, batch: list[Claimed]) -> None:
        return None

    def queued(self) -> None:
        return None


@dataclass
class Gateway:
    """What the use cases share: settings, database, keys, trust, the identity provider whose
    access tokens open AUTH (None when no ``oidc_issuer``), and the delivery workers to hand
    what was queued to (``Dispatch``)."""

    settings: Settings
    db: Database
    keys: KeyRing
    trust: Trust
    dispatch: Dispatch = field(default_factory=Dispatch)
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
