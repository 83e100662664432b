"""Server-side sessions (``webmail.models.WebSession``) behind Flask's session interface.

The cookie carries a random token only (HttpOnly, Secure, SameSite=Lax, no expiry date: it dies
with the browser). A session not used for ``timeout`` is deleted when next presented and the
page says so (MSSanté SC.SSI/IE.58). ``regenerate`` gives the session a new token, keeping
nothing of the old row: called at login so that a token planted before login is worthless
(session fixation). ``last_seen_at`` is written at most once a minute when nothing else
changed, to keep reads cheap, and never for a ``passive`` request (the page's live updates).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import CallbackDict

from core.db import Database, utcnow
from webmail.models import WebSession

TOUCH_EVERY = timedelta(seconds=60)


def token_id(token: str) -> str:
    """The row id of a cookie token."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """The session dict of one request, with what the interface needs to save it."""

    def __init__(self, initial: dict[str, Any] | None = None, token: str | None = None,
                 last_seen: datetime | None = None, expired: bool = False) -> None:
        def on_update(session: ServerSession) -> None:
            session.modified = True

        super().__init__(initial, on_update)
        self.token = token
        self.new = token is None
        self.last_seen = last_seen
        self.expired = expired  # a session was presented but had timed out
        self.modified = False
        self.regenerate_token = False
        # Set by a request the page makes on its own (live updates, webmail.mail.live): it is
        # not the person's activity, so it does not push the inactivity timeout back.
        self.passive = False

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

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        token = request.cookies.get(self.get_cookie_name(app))
        if not token:
            return ServerSession()
        now = utcnow()
        with self.db.transaction() as session:
            row = session.get(WebSession, token_id(token))
            if row is None:
                return ServerSession()
            if now - row.last_seen_at > self.timeout:
                session.delete(row)
                return ServerSession(expired=row.account_id is not None)
            data = json.loads(row.data)
            return ServerSession(data, token=token, last_seen=row.last_seen_at)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        name = self.get_cookie_name(app)
        with self.db.transaction() as db_session:
            if session.regenerate_token and session.token:
                db_session.execute(delete(WebSession).where(WebSession.id == session.row_id))
                session.token = None
            if not session:
                if session.token:
                    db_session.execute(delete(WebSession).where(WebSession.id == session.row_id))
                    response.delete_cookie(name, path=self.get_cookie_path(app),
                                           domain=self.get_cookie_domain(app))
                return
            if session.token is None:
                session.token = self._insert(db_session, session)
                self._set_cookie(app, response, session.token)
            else:
                self._update(db_session, session)
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
