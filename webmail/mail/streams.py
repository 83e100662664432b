"""The bounds on the webmail's event streams (``webmail.mail.live``).

A stream holds one of cheroot's worker threads for as long as it lasts, and the pool is fixed
(``webmail.service``: ``THREADS`` for ordinary requests plus ``MSS_WEB_EVENT_STREAMS`` for
streams). So:

- at most ``limit`` streams per process (``MSS_WEB_EVENT_STREAMS``); past it a page is told
  to poll (``live.poll``) instead — the ordinary requests keep their ``THREADS``;
- at most one per session: a newer stream of the same session (the person opened another
  page) takes the slot over, and the older one ends telling its page to poll; the newer waits
  for the older to have let go, so there are never two;
- each stream lasts a bounded time (``LIVE_STREAM_SECONDS``), then the browser's
  EventSource reconnects (``retry:``), and the session is checked again on the way in.
"""

from __future__ import annotations

import threading


class Busy(Exception):
    """No slot: ``process`` (all slots taken) or ``session`` (the older stream of this
    session did not let go in time)."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


class Ticket:
    """One open stream. ``wake`` is set when there is something to do (a new state, or the
    end); ``reason`` says why the stream must end, None while it may go on."""

    def __init__(self, session_key: str) -> None:
        self.session_key = session_key
        self.wake = threading.Event()
        self.released = threading.Event()
        self.reason: str | None = None

    def end(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.wake.set()


class StreamSlots:
    """The open streams of the process (see the module docstring)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, Ticket] = {}  # by session
        self._lock = threading.Lock()

    def open(self, session_key: str, wait: float = 3.0) -> Ticket:
        """A slot for a stream of ``session_key`` (the server-side session's id).

        Raises:
            Busy: no slot (see ``Busy``).
        """
        with self._lock:
            older = self._open.get(session_key)
        if older is not None:
            older.end("remplacee")
            if not older.released.wait(wait):
                raise Busy("session")
        with self._lock:
            if session_key in self._open:  # a third page of the session got in between
                raise Busy("session")
            if len(self._open) >= self.limit:
                raise Busy("process")
            ticket = self._open[session_key] = Ticket(session_key)
            return ticket

    def close(self, ticket: Ticket) -> None:
        """The stream has ended: its slot is free."""
        with self._lock:
            if self._open.get(ticket.session_key) is ticket:
                del self._open[ticket.session_key]
        ticket.released.set()

    def end_all(self, reason: str) -> None:
        """Tell every stream to end (the service stops)."""
        with self._lock:
            tickets = list(self._open.values())
        for ticket in tickets:
            ticket.end(reason)

    def count(self) -> int:
        with self._lock:
            return len(self._open)
