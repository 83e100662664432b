"""Connection reuse for the webmail: a page view borrows an open, logged-in IMAP session
instead of paying a TCP + TLS handshake and a login each time.

Sessions log in as the user through the master user (``mailstore.credentials``) over implicit
TLS, the server certificate verified against mss's CA. Idle sessions are kept per user (at most
``per_user`` each, ``max_idle`` in all, least recently used dropped first), checked with NOOP
when they have been idle more than ``check_after`` seconds, and logged out after ``idle_ttl``.
A session that raised during use is closed, never returned to the pool; one returned has
the responses no command read dropped (``MailboxSession.forget_responses``). Thread-safe: each
borrowed session is used by one thread at a time.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypedDict, Unpack

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from core.settings import Settings
from mailstore.credentials import MasterCredentials, master_credentials
from mailstore.errors import ImapAuthFailed, ImapError
from mailstore.imap import MailboxSession

log = logging.getLogger("mss.mailstore.imap")


class PoolOptions(TypedDict, total=False):
    """``ImapPool``'s keyword options, for ``ImapPool.for_settings``."""

    per_user: int
    max_idle: int
    idle_ttl: float
    check_after: float
    timeout: float


class ImapPool:
    """Open sessions per user address (see the module docstring)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext,
                 credentials: MasterCredentials, *, per_user: int = 2, max_idle: int = 200,
                 idle_ttl: float = 300.0, check_after: float = 5.0, timeout: float = 30.0,
                 ) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.credentials = credentials
        self.per_user, self.max_idle = per_user, max_idle
        self.idle_ttl, self.check_after, self.timeout = idle_ttl, check_after, timeout
        self._idle: OrderedDict[str, list[tuple[float, MailboxSession]]] = OrderedDict()
        self._lock = threading.Lock()
        self.opened = 0  # sessions opened so far (tests, metrics)

    @classmethod
    def for_settings(cls, settings: Settings, **kwargs: Unpack[PoolOptions]) -> ImapPool:
        """A pool on the IMAPS port of ``MSS_IMAP_HOST`` (``Settings.effective_imap_host``),
        trusting the trust space's CA; the server certificate must name that host."""
        context = ssl.create_default_context(cafile=str(settings.pki_dir / "ca.pem"))
        return cls(settings.effective_imap_host, settings.imaps_port, context,
                   master_credentials(settings), **kwargs)

    @contextmanager
    def session(self, address: str) -> Iterator[MailboxSession]:
        """Borrow a session logged in as ``address``.

        Raises:
            ImapAuthFailed: the store refuses (account locked, suspended, mailbox closed).
            ImapError: the store cannot be reached.
        """
        user = address.strip().lower()
        borrowed = self._checkout(user) or self._open(user)
        try:
            yield borrowed
        except BaseException:
            borrowed.logout()
            raise
        self._checkin(user, borrowed)

    def connect(self, address: str) -> MailboxSession:
        """A new session logged in as ``address``, not pooled: the caller keeps it (an IDLE
        watch, ``mailstore.idle``) and logs it out.

        Raises:
            ImapAuthFailed: the store refuses.
            ImapError: the store cannot be reached.
        """
        return self._open(address.strip().lower())

    def close(self) -> None:
        """Log out every idle session."""
        with self._lock:
            sessions = [s for entries in self._idle.values() for _, s in entries]
            self._idle.clear()
        for s in sessions:
            s.logout()

    def idle_count(self, address: str | None = None) -> int:
        with self._lock:
            if address is not None:
                return len(self._idle.get(address.lower(), ()))
            return sum(len(v) for v in self._idle.values())

    # ------------------------------------------------------------------ internals
    def _checkout(self, user: str) -> MailboxSession | None:
        while True:
            with self._lock:
                entries = self._idle.get(user)
                if not entries:
                    return None
                since, candidate = entries.pop()
                if not entries:
                    del self._idle[user]
            idle = time.monotonic() - since
            if idle > self.idle_ttl:
                candidate.logout()
                continue
            if idle <= self.check_after or self._healthy(candidate):
                return candidate

    @staticmethod
    def _healthy(candidate: MailboxSession) -> bool:
        try:
            candidate.noop()
            return True
        except (ImapError, OSError):
            candidate.logout()
            return False

    def _checkin(self, user: str, session: MailboxSession) -> None:
        session.forget_responses()  # else they pile up for as long as the session is reused
        evicted: list[MailboxSession] = []
        with self._lock:
            entries = self._idle.setdefault(user, [])
            self._idle.move_to_end(user)
            if len(entries) >= self.per_user:
                evicted.append(session)
            else:
                entries.append((time.monotonic(), session))
            while sum(len(v) for v in self._idle.values()) > self.max_idle:
                _, oldest = next(iter(self._idle.items()))
                evicted.append(oldest.pop(0)[1])
                if not oldest:
                    self._idle.popitem(last=False)
        for s in evicted:
            s.logout()

    def _open(self, user: str) -> MailboxSession:
        try:
            client = IMAPClient(self.host, self.port, ssl=True, ssl_context=self.ssl_context,
                                timeout=self.timeout)
        except (OSError, IMAPClientError) as exc:
            raise ImapError(f"Serveur IMAP injoignable ({type(exc).__name__})") from exc
        try:
            client.login(self.credentials.login_for(user), self.credentials.secret)
        except LoginError as exc:
            client.shutdown()
            raise ImapAuthFailed("Accès à la boîte refusé par le serveur IMAP") from exc
        except (OSError, IMAPClientError) as exc:
            client.shutdown()
            raise ImapError(f"Connexion IMAP en échec ({type(exc).__name__})") from exc
        self.opened += 1
        log.debug("session IMAP ouverte pour %s", user)
        return MailboxSession(client, user)
