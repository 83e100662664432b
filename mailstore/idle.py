"""The live state of mailboxes for the webmail (issue #17): one IMAP IDLE connection
(RFC 2177) per watched mailbox and process, shared by every browser stream watching it.

A ``WatchHub`` keeps the watches. A stream ``subscribe``s to a mailbox with a
``threading.Event`` that the watch sets whenever the state changed; it reads the state from
its ``Subscription`` and ``unsubscribe``s when it ends. The first subscription to a mailbox
opens its watch: a thread with its own IMAP connection (not one of the pool's), which
EXAMINEs the Boîte de réception (read-only: no \\Recent taken from other clients), reads its
state, enters IDLE and, at each change the server reports (EXISTS, EXPUNGE, FETCH flags),
leaves IDLE, reads the state again and wakes its subscribers. The watch closes when no stream
has watched it for ``linger_seconds``: a browser's EventSource reconnecting after a bounded
stream finds it still open.

The state (``InboxState``) is counts and UIDs, never content: MESSAGES, UNSEEN, UIDNEXT,
UIDVALIDITY (one STATUS), the UIDs of the messages that arrived since the oldest point a
subscriber asked about (one ``UID SEARCH UID n:*``, at most ``span`` UIDs), and the quota
(``mailstore.imapquota``).

Whose connection: a personal mailbox is watched as its holder (the only one who may watch
it); an organisational mailbox as one of the delegates watching it — every delegate sees the
same Boîte de réception and the same \\Seen flags (the shared namespace has no private
index), and who may watch which mailbox is decided by the webmail before it subscribes
(``webmail.mail.access``). When that delegate no longer watches, the watch reconnects as one
who does. The master user cannot log in as an organisational mailbox (it has no account).

Why IDLE and not NOTIFY: Dovecot 2.3.19 does advertise NOTIFY (RFC 5465; CAPABILITY of the
running server lists it), which reports every folder of one user on one connection. But a
watch here is per mailbox, shared between people; deliveries land in the Boîte de réception;
IMAPClient speaks IDLE and not NOTIFY; and every IMAP server offers IDLE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from core.errors import MssError
from mailstore.errors import ImapError
from mailstore.imap import MailboxSession, Quota, shared_folder
from mailstore.imapquota import own_usage, shared_usage

log = logging.getLogger("mss.mailstore.idle")
STATUS_ITEMS = [b"MESSAGES", b"UNSEEN", b"UIDNEXT", b"UIDVALIDITY"]


@dataclass(frozen=True)
class Target:
    """A mailbox to watch: its address (the watch's key) and, for a delegate's view of an
    organisational mailbox, the quota the directory gives it (``mailstore.imapquota``)."""

    address: str
    limit_kb: int | None = None

    def folder(self, login: str) -> str:
        """The IMAP name of its Boîte de réception in ``login``'s session."""
        return "INBOX" if login == self.address else shared_folder(self.address)

    def usage(self, client: IMAPClient, login: str) -> Quota | None:
        if login == self.address:
            return own_usage(client)
        return shared_usage(client, self.address, self.limit_kb)


@dataclass(frozen=True)
class InboxState:
    """A Boîte de réception at one moment (see the module docstring)."""

    uidvalidity: int
    uidnext: int
    messages: int
    unseen: int
    floor: int  # ``arrivals`` lists every UID from here on
    arrivals: tuple[int, ...]
    quota: Quota | None

    def since(self, uid: int) -> tuple[int, ...]:
        """The UIDs of the messages present with a UID of ``uid`` or more (arrived since a
        page showed UIDNEXT = ``uid``), as far as this state knows (from ``floor``)."""
        return tuple(u for u in self.arrivals if u >= uid)


def read_state(client: IMAPClient, folder: str, usage: Callable[[IMAPClient], Quota | None],
               floor: int | None = None, span: int = 1000) -> InboxState:
    """The state of ``folder``, which is the selected mailbox (the SEARCH runs there).
    ``floor``: the oldest UIDNEXT a reader asks about; at most ``span`` UIDs back."""
    status = client.folder_status(folder, STATUS_ITEMS)
    uidnext = int(status[b"UIDNEXT"])
    low = uidnext if floor is None else max(min(floor, uidnext), uidnext - span, 1)
    arrivals: tuple[int, ...] = ()
    if low < uidnext:
        found = client.search(["UID", f"{low}:*"])  # RFC 3501 §6.4.8: "n:*" holds the last
        arrivals = tuple(sorted(int(u) for u in found if int(u) >= low))
    return InboxState(int(status[b"UIDVALIDITY"]), uidnext, int(status[b"MESSAGES"]),
                      int(status[b"UNSEEN"]), low, arrivals, usage(client))


class Subscription:
    """One stream's interest in one mailbox."""

    def __init__(self, watch: _Watch, login: str, wake: threading.Event) -> None:
        self.watch, self.login, self.wake = watch, login, wake

    @property
    def state(self) -> InboxState | None:
        return self.watch.state

    @property
    def failed(self) -> bool:
        """The watch cannot read the mailbox at the moment (it retries)."""
        return self.watch.failed


class _Watch:
    def __init__(self, hub: WatchHub, target: Target) -> None:
        self.hub, self.target = hub, target
        self.subs: dict[Subscription, None] = {}  # guarded by the hub's lock
        self.state: InboxState | None = None
        self.failed = False
        self.floor: int | None = None  # the oldest UIDNEXT a subscriber asked about
        self.unwatched_since: float | None = None
        self.stop = threading.Event()
        self.login = ""
        self.thread = threading.Thread(target=self._run, name=f"imap-idle {target.address}",
                                       daemon=True)

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        backoff = 1.0
        while not self.hub._finished(self):
            self.login = self.hub._login_for(self)
            try:
                session = self.hub.connect(self.login)
            except (MssError, IMAPClientError, OSError) as exc:
                self._failed(exc)
            else:
                try:
                    self._watch(session)
                    backoff = 1.0
                    continue
                except (MssError, IMAPClientError, OSError) as exc:
                    self._failed(exc)
                finally:
                    session.logout()
            self.stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)
        log.debug("surveillance IMAP fermée : %s", self.target.address)

    def _watch(self, session: MailboxSession) -> None:
        """Select, read, IDLE until a change; again until the watch ends or must reconnect
        as another delegate."""
        client = session.client
        folder = self.target.folder(self.login)
        client.select_folder(folder, readonly=True)
        self._refresh(client, folder)
        while not self.hub._finished(self):
            client.idle()
            reason = self._idle(client)  # raised: the caller logs the session out
            client.idle_done()
            if reason == "reconnect":
                return
            self._refresh(client, folder)

    def _idle(self, client: IMAPClient) -> str:
        """Wait in IDLE; why it stopped: "change", "floor", "reconnect" or "end"."""
        started, quick = time.monotonic(), 0
        while not self.hub._finished(self):
            begun = time.monotonic()
            responses = client.idle_check(timeout=self.hub.slice_seconds)
            if any(_is_bye(r) for r in responses):
                raise ImapError("connexion IDLE close par le serveur")
            if any(_is_change(r) for r in responses):
                client.idle_check(timeout=0.05)  # a burst of deliveries: one refresh
                return "change"
            # imapclient returns [] at once on a closed socket: do not spin on it
            quick = quick + 1 if not responses and time.monotonic() - begun < 0.01 else 0
            if quick > 5:
                raise ImapError("connexion IDLE perdue")
            if self.state is not None and self.floor is not None \
                    and self.floor < self.state.floor:
                return "floor"
            if self.hub._login_for(self) != self.login:
                return "reconnect"
            if time.monotonic() - started > self.hub.reidle_seconds:  # RFC 2177 §3: < 29 min
                return "change"
        return "end"

    def _refresh(self, client: IMAPClient, folder: str) -> None:
        login = self.login
        state = read_state(client, folder, lambda c: self.target.usage(c, login), self.floor,
                           self.hub.span)
        self.failed = False
        self.hub._publish(self, state)

    def _failed(self, exc: BaseException) -> None:
        log.info("surveillance IMAP de %s en échec : %s", self.target.address,
                 type(exc).__name__)
        self.failed = True
        self.hub._publish(self, self.state)


def _is_change(response: Any) -> bool:
    """EXISTS, EXPUNGE, FETCH (flags), RECENT: ``(number, b"WORD", …)``; not ``OK Still
    here`` (Dovecot's imap_idle_notify_interval)."""
    return isinstance(response, tuple) and len(response) >= 2 and isinstance(response[0], int)


def _is_bye(response: Any) -> bool:
    return isinstance(response, tuple) and bool(response) and response[0] == b"BYE"


class WatchHub:
    """The process's watches, keyed by mailbox address (see the module docstring).

    ``connect(login)`` opens a new logged-in session (``ImapPool.connect``). ``slice_seconds``
    bounds how long a watch takes to notice it must stop, lower its floor or change
    identity (deliveries are noticed at once: the server's response ends the wait).
    """

    def __init__(self, connect: Callable[[str], MailboxSession], *, slice_seconds: float = 1.0,
                 linger_seconds: float = 10.0, reidle_seconds: float = 600.0,
                 span: int = 1000) -> None:
        self.connect = connect
        self.slice_seconds, self.linger_seconds = slice_seconds, linger_seconds
        self.reidle_seconds, self.span = reidle_seconds, span
        self._watches: dict[str, _Watch] = {}
        self._lock = threading.Lock()
        self._closed = False

    def subscribe(self, target: Target, login: str, wake: threading.Event,
                  since: int | None = None) -> Subscription:
        """Watch ``target`` for ``login`` (already authorised); ``wake`` is set at each new
        state. ``since``: the UIDNEXT the subscriber's page showed (``InboxState.since``).

        Raises:
            ImapError: the hub is closed (the service is stopping).
        """
        with self._lock:
            if self._closed:
                raise ImapError("surveillance arrêtée")
            watch = self._watches.get(target.address)
            start = watch is None
            if watch is None:
                watch = self._watches[target.address] = _Watch(self, target)
            subscription = Subscription(watch, login.lower(), wake)
            watch.subs[subscription] = None
            watch.unwatched_since = None
            if since is not None:
                watch.floor = since if watch.floor is None else min(watch.floor, since)
        if start:
            watch.thread.start()
        elif watch.state is not None:
            wake.set()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            watch = subscription.watch
            watch.subs.pop(subscription, None)
            if not watch.subs:
                watch.unwatched_since = time.monotonic()

    def watching(self) -> list[str]:
        """The addresses with an open watch (tests, metrics)."""
        with self._lock:
            return sorted(self._watches)

    def close(self, timeout: float = 5.0) -> None:
        """Stop every watch (the service stops)."""
        with self._lock:
            self._closed = True
            watches = list(self._watches.values())
            self._watches.clear()
        for watch in watches:
            watch.stop.set()
        deadline = time.monotonic() + timeout
        for watch in watches:
            if watch.thread.is_alive():
                watch.thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ for the watches
    def _finished(self, watch: _Watch) -> bool:
        with self._lock:
            lingered = (not watch.subs and watch.unwatched_since is not None
                        and time.monotonic() - watch.unwatched_since >= self.linger_seconds)
            if self._closed or watch.stop.is_set() or lingered:
                watch.stop.set()
                if self._watches.get(watch.target.address) is watch:
                    del self._watches[watch.target.address]
                return True
            return False

    def _login_for(self, watch: _Watch) -> str:
        """The holder when they watch, else a delegate who does, else the current one."""
        with self._lock:
            logins = [s.login for s in watch.subs]
        if watch.target.address in logins:
            return watch.target.address
        if watch.login in logins or not logins:
            return watch.login or watch.target.address
        return logins[0]

    def _publish(self, watch: _Watch, state: InboxState | None) -> None:
        with self._lock:
            watch.state = state
            wakes = [s.wake for s in watch.subs]
        for wake in wakes:
            wake.set()
