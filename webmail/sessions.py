"""Server-side sessions (``webmail.models.WebSession``) behind Flask's session interface.

The cookie carries a random token only (HttpOnly, Secure, SameSite=Lax, no expiry date: it dies
with the browser). A session not used for ``timeout`` is deleted when next presented and the
page says so (MSSanté SC.SSI/IE.58). ``regenerate`` gives the session a new token, keeping
nothing of the old row: called at login so that a token planted before login is worthless
(session fixation). ``last_seen_at`` is written at most once a minute when nothing else
changed, to keep reads cheap, and never for a ``passive`` request (the page's live updates).

An anonymous visit that holds nothing but its CSRF token, its messages (``flash``) and the page
that asked for the log-in (``ANONYMOUS_KEYS``) gets no row: those few values travel in the same
cookie, signed with the application's key and dated (itsdangerous; refused after ``timeout``, or
if altered). Otherwise every cookieless GET of the log-in page stored a row until the purge, and
a flood of them grew the table without limit. A row is made when the session needs one: a
pending second factor, a password reset, the Pro Santé Connect state, a log-in. A row token and
a signed value never look alike (the token has no ``.``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import CallbackDict

from core.db import Database, utcnow
from webmail.models import WebSession

TOUCH_EVERY = timedelta(seconds=60)
# What an anonymous session may hold and still live in its cookie (the module docstring).
ANONYMOUS_KEYS = frozenset({"csrf_token", "_flashes", "pending_login_next"})


def token_id(token: str) -> str:
    """The row id of a cookie token."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """The session dict of one request, with what the interface needs to save it."""

    def __init__(self, initial: dict[str, Any] | None = None, token: str | None = None,
                 last_seen: datetime | None = None, expired: bool = False,
                 had_cookie: bool = False) -> None:
        def on_update(session: ServerSession) -> None:
            session.modified = True

        super().__init__(initial, on_update)
        self.token = token
        self.new = token is None
        self.last_seen = last_seen
        self.expired = expired  # a session was presented but had timed out
        self.had_cookie = had_cookie  # the browser sent a cookie (a token or signed data)
        self.modified = False
        self.regenerate_token = False
        # Set by a request the page makes on its own (live updates, webmail.mail.live): it is
        # not the person's activity, so it does not push the inactivity timeout back.
        self.passive = False

    @property
    def anonymous_light(self) -> bool:
        """Whether this session may live in its cookie, without a row (``ANONYMOUS_KEYS``)."""
        return self.token is None and ANONYMOUS_KEYS.issuperset(self.keys())

    @property
    def row_id(self) -> str | None:
        return token_id(self.token) if self.token else None

    def regenerate(self) -> None:
        """Drop everything and take a new token at the end of this request."""
        self.clear()
        self.regenerate_token = True


def mark_passive(session: SessionMixin) -> None:
    """Mark this request's ``session`` as one the page makes on its own (``passive``)."""
    assert isinstance(session, ServerSession)  # DbSessionInterface opens every session
    session.passive = True


class DbSessionInterface(SessionInterface):
    """Flask session interface storing sessions in ``web_session``."""

    def __init__(self, db: Database, timeout: timedelta) -> None:
        self.db = db
        self.timeout = timeout

    def _signer(self, app: Flask) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(app.secret_key or "", salt="mss anonymous session")

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        token = request.cookies.get(self.get_cookie_name(app))
        if not token:
            return ServerSession()
        if "." in token:  # an anonymous visit's signed values (no row)
            try:
                data, signed_at = self._signer(app).loads(
                    token, max_age=int(self.timeout.total_seconds()), return_timestamp=True)
            except BadSignature:  # altered, expired, or signed with another key
                return ServerSession(had_cookie=True)
            if not isinstance(data, dict) or not ANONYMOUS_KEYS.issuperset(data):
                return ServerSession(had_cookie=True)
            return ServerSession(data, last_seen=signed_at, had_cookie=True)
        now = utcnow()
        with self.db.transaction() as session:
            row = session.get(WebSession, token_id(token))
            if row is None:
                return ServerSession(had_cookie=True)
            if now - row.last_seen_at > self.timeout:
                session.delete(row)
                return ServerSession(expired=row.account_id is not None, had_cookie=True)
            data = json.loads(row.data)
            return ServerSession(data, token=token, last_seen=row.last_seen_at,
                                 had_cookie=True)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        if session.token and (session.regenerate_token or not session):
            with self.db.transaction() as db_session:  # its row is worthless now
                db_session.execute(delete(WebSession).where(WebSession.id == session.row_id))
            session.token = None
        if not session:
            if session.had_cookie:
                response.delete_cookie(self.get_cookie_name(app), path=self.get_cookie_path(app),
                                       domain=self.get_cookie_domain(app))
            return
        if session.anonymous_light:  # no row: the values in the cookie (module docstring)
            self._save_signed(app, session, response)
            return
        with self.db.transaction() as db_session:
            if session.token is None:
                session.token = self._insert(db_session, session)
                self._set_cookie(app, response, session.token)
            else:
                self._update(db_session, session)
        response.vary.add("Cookie")

    def _save_signed(self, app: Flask, session: ServerSession, response: Response) -> None:
        """Put an anonymous session's values in its cookie, signed and dated (again when they
        changed or every ``TOUCH_EVERY``, so that a visit in progress does not time out)."""
        stale = session.last_seen is None or utcnow() - session.last_seen > TOUCH_EVERY
        if session.modified or stale or not session.had_cookie:
            self._set_cookie(app, response, self._signer(app).dumps(dict(session)))
        response.vary.add("Cookie")

    def _insert(self, db_session: Session, session: ServerSession) -> str:
        from flask import request

        token = secrets.token_urlsafe(32)
        now = utcnow()
        db_session.execute(delete(WebSession).where(WebSession.last_seen_at < now - self.timeout))
        db_session.add(WebSession(
            id=token_id(token), account_id=_account_id(session), data=json.dumps(dict(session)),
            created_at=now, last_seen_at=now, login_method=session.get("login_method", ""),
            user_agent=(request.user_agent.string or "")[:200],
            remote_addr=(request.remote_addr or "")[:45]))
        return token

    def _update(self, db_session: Session, session: ServerSession) -> None:
        now = utcnow()
        stale = session.last_seen is None or now - session.last_seen > TOUCH_EVERY
        if not (session.modified or stale) or (session.passive and not session.modified):
            return
        row = db_session.get(WebSession, session.row_id)
        if row is None:  # revoked meanwhile ("déconnecter partout"): do not resurrect it
            return
        row.last_seen_at = now
        if session.modified:
            row.data = json.dumps(dict(session))
            row.account_id = _account_id(session)
            row.login_method = session.get("login_method", "")

    def _set_cookie(self, app: Flask, response: Response, token: str) -> None:
        response.set_cookie(
            self.get_cookie_name(app), token, path=self.get_cookie_path(app),
            domain=self.get_cookie_domain(app), secure=self.get_cookie_secure(app),
            httponly=True, samesite=self.get_cookie_samesite(app))


def _account_id(session: ServerSession) -> int | None:
    value = session.get("_user_id")
    return int(value) if value is not None else None


# ---------------------------------------------------------------- "Mes sessions"
def active_sessions(db_session: Session, account_id: int,
                    timeout: timedelta) -> list[WebSession]:
    """The account's sessions still alive, most recently used first."""
    since = utcnow() - timeout
    return list(db_session.scalars(
        select(WebSession).where(WebSession.account_id == account_id,
                                 WebSession.last_seen_at >= since)
        .order_by(WebSession.last_seen_at.desc())))


def revoke_all(db_session: Session, account_id: int, keep: str | None = None) -> int:
    """Delete every session of the account (but ``keep``, a row id); how many were deleted."""
    query = delete(WebSession).where(WebSession.account_id == account_id)
    if keep:
        query = query.where(WebSession.id != keep)
    result = db_session.execute(query)
    return int(getattr(result, "rowcount", 0) or 0)
