"""New mail without reloading (issue #17): the counts, the quota and "the list changed" pushed
to the mail pages, fed by IMAP IDLE (``mailstore.idle``).

- ``GET /courrier/evenements?boite=<id>&depuis=<uidnext>``: Server-Sent Events (``text/
  event-stream``). First ``retry:`` (the browser's EventSource reconnects that many ms after
  the stream ends), then an ``etat`` event whenever the state changed — the unread count of
  every Boîte de réception of the person, and of the current mailbox: messages, UIDNEXT, the
  UIDs arrived since ``depuis`` (the UIDNEXT its page showed), its quota — a comment every
  ``LIVE_HEARTBEAT_SECONDS``, and ``fin`` with a reason when it ends: ``duree`` (each stream
  lasts ``LIVE_STREAM_SECONDS``; the browser reconnects), ``remplacee`` (another page of the
  session took the stream over: this one polls), ``expiree`` (the session timed out),
  ``arret`` (the service stops). Counts and UIDs only: the page refreshes its list itself,
  with ``fragment()`` of its own URL, so the same template renders it.
- ``GET /courrier/<id>/etat?depuis=<uidnext>``: the same state as JSON, for the pages that
  cannot have a stream — all slots taken (HTTP 503), their session's stream moved to another
  page, no EventSource — and poll it every ``LIVE_POLL_SECONDS`` (30 s): STATUS of each Boîte
  de réception, a UID SEARCH and the quota, in the person's pooled session.

Both: a signed-in professional (else 401: a script asks, not a person), a mailbox they may
open (``access.authorise``: someone else's is a 404, as for every mail route), asked from this
site (``Sec-Fetch-Site``: a cross-site request is refused). Neither counts as activity: the
session still ends after ``MSS_SESSION_TIMEOUT_MINUTES`` without a page the person asked for
(MSSanté SC.SSI/IE.58), and a stream checks the session at every heartbeat and ends then.
How many streams, per session and per process, and why: ``webmail.mail.streams``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from flask import Blueprint, Flask, current_app, g, jsonify, request, session, url_for
from flask_login import current_user
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from werkzeug.wrappers import Response

from core.db import Database, utcnow
from core.errors import MssError, NotFound
from mailstore.errors import MailstoreError
from mailstore.idle import InboxState, Subscription, Target, WatchHub, read_state
from mailstore.imap import Quota
from webmail.errors import Forbidden
from webmail.mail import imap_uid
from webmail.mail.access import INBOX, Box, Right, accessible_boxes, authorise, imap, pool
from webmail.mail.gauge import Gauge, box_quota, gauge, limit_kb
from webmail.mail.streams import Busy, StreamSlots, Ticket
from webmail.models import WebSession
from webmail.sessions import mark_passive

log = logging.getLogger("mss.webmail.live")
bp = Blueprint("live", __name__, url_prefix="/courrier")
DEFAULTS = {"LIVE_STREAM_SECONDS": 50.0, "LIVE_HEARTBEAT_SECONDS": 15.0, "LIVE_RETRY_MS": 1000,
            "LIVE_POLL_SECONDS": 30, "LIVE_LINGER_SECONDS": 10.0}
MAX_BOXES = 20  # mailboxes watched by one stream (the others' counts wait for a page)
_CREATE = threading.Lock()


@dataclass
class Live:
    """The process's watches and stream slots (``app.extensions["mss.live"]``)."""

    hub: WatchHub
    slots: StreamSlots


def init_app(app: Flask) -> None:
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    app.register_blueprint(bp)
    app.add_template_global(live_page, "live_page")


def live() -> Live:
    found = current_app.extensions.get("mss.live")
    if found is None:
        with _CREATE:
            found = current_app.extensions.get("mss.live")
            if found is None:
                found = current_app.extensions["mss.live"] = Live(
                    WatchHub(pool().connect,
                             linger_seconds=float(current_app.config["LIVE_LINGER_SECONDS"])),
                    StreamSlots(current_app.extensions["mss"].settings.web_event_streams))
    return cast(Live, found)


def shutdown(app: Flask) -> None:
    """End every stream and close every watch (``WebmailService.stop``)."""
    found = app.extensions.get("mss.live")
    if found is not None:
        found.slots.end_all("arret")
        found.hub.close()


# ---------------------------------------------------------------------- access
@bp.before_request
def _guard() -> Response | None:
    if not current_user.is_authenticated:
        return _json(401, "Session absente ou expirée : reconnectez-vous.")
    if current_user.professional_id is None:
        raise Forbidden("La messagerie est réservée aux professionnels.")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return _json(403, "Demande refusée : elle ne vient pas de cette messagerie.")
    mark_passive(session)  # not activity (webmail.sessions)
    return None


@bp.errorhandler(MailstoreError)
def _store_error(exc: MailstoreError) -> Response:
    log.info("état en direct indisponible : %s", exc.code)
    return _json(503, "Messagerie momentanément indisponible.")


def _json(status: int, text: str, **extra: Any) -> Response:
    answer = jsonify(error=text, **extra)
    answer.status_code = status
    return answer


def _box_arg() -> int:
    raw = request.args.get("boite", "")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        raise NotFound("Boîte aux lettres introuvable.")
    return int(raw)


# ---------------------------------------------------------------------- the state as JSON
def payload(current: Box, boxes: list[Box], states: Mapping[int, InboxState],
            since: int | None, quota: Quota | None, unavailable: bool = False
            ) -> dict[str, Any] | None:
    """What a page is told: counts and UIDs, never a subject or an address. None until the
    current mailbox's state is known."""
    state = states.get(current.id)
    if state is None:
        return None
    counts = [{"id": b.id, "unseen": states[b.id].unseen, "uidnext": states[b.id].uidnext}
              for b in boxes if b.id in states]
    shown = gauge(quota)
    return {"total": sum(c["unseen"] for c in counts), "boxes": counts,
            "box": {"id": current.id, "unseen": state.unseen, "messages": state.messages,
                    "uidnext": state.uidnext, "uidvalidity": state.uidvalidity,
                    "new": list(state.since(since)) if since else [],
                    "quota": shown.json() if shown else None},
            "unavailable": unavailable}


def _config() -> dict[str, float]:
    return {key: float(current_app.config[key]) for key in DEFAULTS}


# ---------------------------------------------------------------------- the stream
@bp.get("/evenements")
def events() -> Response:
    """The event stream (see the module docstring)."""
    box = authorise(_box_arg(), Right.READ)
    since = imap_uid(request.args.get("depuis"))
    config = _config()
    found = live()
    if found.slots.limit <= 0:
        return _busy("process", config)
    key = getattr(session, "row_id", None)  # the server-side session (webmail.sessions)
    if not key:
        return _json(401, "Session absente ou expirée : reconnectez-vous.")
    try:
        ticket = found.slots.open(key)
    except Busy as exc:
        return _busy(exc.scope, config)
    boxes = [box] + [b for b in accessible_boxes() if b.id != box.id][:MAX_BOXES - 1]
    subs: dict[int, Subscription] = {}
    try:
        for b in boxes:
            target = Target(b.address, None if b.is_own else limit_kb(b))
            subs[b.id] = found.hub.subscribe(target, current_user.login, ticket.wake,
                                             since if b.id == box.id else None)
    except MssError:
        _release(found, subs, ticket)
        return _busy("process", config)
    alive = _session_check(current_app.extensions["mss"].db, key, current_user.id,
                           current_app.extensions["mss"].timeout.total_seconds())
    stream = _stream(found, ticket, subs, box, boxes, since, alive, config)
    return Response(stream, mimetype="text/event-stream", direct_passthrough=True,
                    headers={"X-Accel-Buffering": "no"})  # a proxy must not hold the events


def _busy(scope: str, config: Mapping[str, float]) -> Response:
    """No stream: the page polls instead (429: its session's stream is elsewhere; 503: every
    slot of the process is taken)."""
    seconds = int(config["LIVE_POLL_SECONDS"])
    answer = _json(429 if scope == "session" else 503,
                   "Mises à jour en direct indisponibles : la page se met à jour toutes les "
                   f"{seconds} secondes.", poll=seconds)
    answer.headers["Retry-After"] = str(seconds)
    return answer


def _stream(found: Live, ticket: Ticket, subs: dict[int, Subscription], box: Box,
            boxes: list[Box], since: int | None, alive: Callable[[], bool],
            config: Mapping[str, float]) -> Iterator[bytes]:
    """The events of one stream (bytes: WSGI, and ``direct_passthrough`` encodes nothing);
    runs in the worker thread that serves it, outside the request (everything it needs is
    given)."""
    try:
        yield f"retry: {int(config['LIVE_RETRY_MS'])}\n\n".encode()
        heartbeat = config["LIVE_HEARTBEAT_SECONDS"]
        deadline = time.monotonic() + config["LIVE_STREAM_SECONDS"]
        next_check, last = time.monotonic() + heartbeat, None
        ticket.wake.set()  # the states already known go out at once
        while True:
            now = time.monotonic()
            if ticket.reason is None and now >= deadline:
                ticket.end("duree")
            if ticket.reason is not None:
                yield _event("fin", {"reason": ticket.reason})
                return
            if ticket.wake.wait(max(0.0, min(next_check, deadline) - now)):
                ticket.wake.clear()  # before reading: a later change wakes us again
                states = {i: s.state for i, s in subs.items() if s.state is not None}
                data = payload(box, boxes, states, since, _quota(subs[box.id]),
                               any(s.failed for s in subs.values()))
                if data is not None and data != last and ticket.reason is None:
                    last = data
                    yield _event("etat", data)
            if time.monotonic() >= next_check:
                if not alive():
                    ticket.end("expiree")
                    continue
                yield b": ok\n\n"  # heartbeat: a comment, ignored by EventSource
                next_check = time.monotonic() + heartbeat
    finally:
        _release(found, subs, ticket)


def _quota(sub: Subscription) -> Quota | None:
    state = sub.state
    return state.quota if state is not None else None


def _release(found: Live, subs: dict[int, Subscription], ticket: Ticket) -> None:
    for sub in subs.values():
        found.hub.unsubscribe(sub)
    found.slots.close(ticket)


def _event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _session_check(db: Database, row_id: str | None, account_id: int,
                   timeout_seconds: float) -> Callable[[], bool]:
    """Whether the session is still open: not signed out, not closed from "Mes sessions",
    not timed out (the stream itself does not keep it alive)."""

    def alive() -> bool:
        if row_id is None:
            return False
        try:
            with db.read() as s:
                row = s.get(WebSession, row_id)
                return (row is not None and row.account_id == account_id
                        and (utcnow() - row.last_seen_at).total_seconds() <= timeout_seconds)
        except Exception:  # a stream must end, not die, on a database error
            log.warning("session illisible pendant un flux d'événements", exc_info=True)
            return False

    return alive


# ---------------------------------------------------------------------- polling
@bp.get("/<int:box_id>/etat")
def poll(box_id: int) -> Response:
    """The state as JSON (see the module docstring): the pages without a stream poll it."""
    box = authorise(box_id, Right.READ)
    since = imap_uid(request.args.get("depuis"))
    boxes = [box] + [b for b in accessible_boxes() if b.id != box.id]
    states: dict[int, InboxState] = {}
    with imap() as s:
        for b in boxes:
            folder = b.imap_name(INBOX)
            floor = since if b.id == box.id else None
            try:
                if floor is not None:
                    s.select(folder)
                    s.noop()
                states[b.id] = read_state(s.client, folder, lambda _c: None, floor)
            except IMAPClientAbortError:
                raise
            except (IMAPClientError, MailstoreError):
                continue  # a mailbox the server refuses (a delegation just withdrawn)
        quota = box_quota(s, box)
    data = payload(box, boxes, states, since, quota)
    if data is None:
        return _json(503, "Messagerie momentanément indisponible.")
    return jsonify(data)


# ---------------------------------------------------------------------- the page's side
@dataclass(frozen=True)
class LivePage:
    """What a mail page needs to go live: its baseline (the Boîte de réception as the page
    was drawn), the gauge, the URLs of its stream and of its polling."""

    box: Box
    state: InboxState | None
    gauge: Gauge | None

    @property
    def since(self) -> int | None:
        return self.state.uidnext if self.state else None

    def root_attrs(self, notify: tuple[bool, bool]) -> dict[str, str]:
        """The data-* attributes of the mail layout (``js/live.js``, ``js/notify.js``)."""
        config = current_app.config
        streams = current_app.extensions["mss"].settings.web_event_streams > 0
        names = {str(b.id): {"name": b.name, "url": url_for("mail.folder", box_id=b.id)}
                 for b in accessible_boxes()}
        return {
            "data-live-events": url_for("live.events", boite=self.box.id, depuis=self.since)
            if streams else "",
            "data-live-poll": url_for("live.poll", box_id=self.box.id, depuis=self.since),
            "data-live-poll-seconds": str(int(config["LIVE_POLL_SECONDS"])),
            "data-live-box": str(self.box.id),
            "data-live-boxes": json.dumps(names, ensure_ascii=False),
            "data-live-nav": url_for("mail.index"),
            "data-live-login": url_for("auth.login"),
            "data-live-icon": url_for("static", filename="favicon.svg"),
            "data-notify": "1" if notify[0] else "",
            "data-notify-details": "1" if notify[0] and notify[1] else "",
            **self.list_attrs(),
        }

    def list_attrs(self) -> dict[str, str]:
        """The baseline, on the layout and on the refreshed list (``data-live-list``)."""
        if self.state is None:
            return {}
        return {"data-live-uidnext": str(self.state.uidnext),
                "data-live-messages": str(self.state.messages),
                "data-live-unseen": str(self.state.unseen)}


def live_page(box: Box) -> LivePage:
    """The live side of a mail page of ``box`` (read once per request; a store that does not
    answer leaves the page as it is, without baseline or gauge)."""
    cache = g.setdefault("live_pages", {})
    if box.id in cache:
        return cast(LivePage, cache[box.id])
    state, quota = None, None
    try:
        with imap() as s:
            state = read_state(s.client, box.imap_name(INBOX), lambda _c: None)
            quota = box_quota(s, box)
    except (MssError, IMAPClientError, OSError) as exc:
        log.info("état de la boîte indisponible pour la page : %s", type(exc).__name__)
    found = cache[box.id] = LivePage(box, state, gauge(quota))
    return found
