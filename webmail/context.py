"""What the webmail's views share: settings, database, transports, trust store, the logged-in
user, the audit helper and the access-control decorators (CONVENTIONS.md, 8)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from flask import Flask, current_app, request
from flask_login import UserMixin, current_user
from sqlalchemy.orm import Session
from werkzeug.local import LocalProxy

from certs.validation import TrustStore
from core import audit
from core.db import Database
from core.mailer import Mailer
from core.settings import Settings
from mailformat import authresults
from trust_space.errors import AuthenticationFailed
from trust_space.models import Account
from webmail.auth.rules import check_webmail_access
from webmail.auth.sms import SmsProvider
from webmail.errors import Forbidden
from webmail.security import login_manager

log = logging.getLogger("mss.webmail")
F = TypeVar("F", bound=Callable[..., Any])
E = TypeVar("E")


class PeerCheck(Protocol):
    """Probes peer operators' relays now and records the results (issue #20; built by
    ``mss.peer_probe.checker`` and handed over by ``mss run``: the webmail opens no SMTP
    session itself). ``domain`` None: every whitelisted peer. Returns, per domain probed,
    (domain, reached and conforming, what failed in French).

    Raises:
        core.errors.NotFound: ``domain`` is not whitelisted.
        core.errors.ConfigError: our operator certificate or CA cannot be read.
    """

    def __call__(self, domain: str | None, login: str, details: Mapping[str, object], /
                 ) -> list[tuple[str, bool, str]]: ...


@dataclass
class Webmail:
    """The webmail's collaborators, built once by ``create_app`` (``app.extensions["mss"]``)."""

    settings: Settings
    db: Database
    mailer: Mailer
    sms: SmsProvider
    acl_sync: Callable[[], None]
    peer_check: PeerCheck | None = None  # None: "Vérifier maintenant" says it is unavailable
    _store: tuple[tuple[float, float], TrustStore] | None = field(default=None, repr=False)

    @functools.cached_property
    def seal_key(self) -> bytes:
        """The key of the gateway's seal on its verdicts (``mailformat.authresults``)."""
        return authresults.key_for(self.settings)

    @property
    def timeout(self) -> timedelta:
        return timedelta(minutes=self.settings.session_timeout_minutes)

    @property
    def sender(self) -> str:
        return f"ne-pas-repondre@{self.settings.domain}"

    @property
    def url(self) -> str:
        s = self.settings
        return s.webmail_url or f"https://{s.hostname}:{s.web_port}/"

    def trust_store(self) -> TrustStore:
        """The CA and CRL of the trust space, re-read when either file changes (the CRL is
        renewed while the service runs)."""
        pki = self.settings.pki_dir
        stamp = tuple(_mtime(pki / name) for name in ("ca.pem", "crl.pem"))
        if self._store is None or self._store[0] != stamp:
            self._store = (cast(tuple[float, float], stamp), TrustStore.from_pki_dir(pki))
        return self._store[1]


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


def extension(kind: type[E], name: str) -> E:
    """The current application's ``extensions[name]``, a ``kind`` set by an ``init_app``
    (or, lazily, by its accessor). The one place that gives the registry's values their type:
    Flask types it ``dict[str, Any]``."""
    return cast(E, current_app.extensions[name])


def real_app() -> Flask:
    """The application behind the ``current_app`` proxy, for a thread that outlives the
    request (Flask's documented ``_get_current_object``)."""
    # flask.globals declares current_app a Flask; it is a werkzeug LocalProxy[Flask].
    return cast("LocalProxy[Flask]", current_app)._get_current_object()


def mss() -> Webmail:
    """The ``Webmail`` of the current application."""
    return extension(Webmail, "mss")


@dataclass(frozen=True)
class WebUser(UserMixin):
    """The logged-in person, as flask-login sees them (a snapshot of the account)."""

    id: int
    login: str
    display_name: str
    is_operator: bool
    professional_id: int | None

    @classmethod
    def of(cls, account: Account) -> WebUser:
        name = account.professional.display_name if account.professional else account.login
        return cls(account.id, account.login, name, bool(account.is_operator),
                   account.professional_id)

    def get_id(self) -> str:
        return str(self.id)


def load_user(user_id: str) -> WebUser | None:
    """flask-login's user loader: the log-in's own rule (an active account of a person, with
    a published personal mailbox), on each request, so that an account or a mailbox suspended
    since the log-in ends the session at the next request."""
    with mss().db.transaction() as session:
        account = session.get(Account, int(user_id))
        if account is None:
            return None
        try:
            check_webmail_access(session, account)
        except AuthenticationFailed:
            return None
        return WebUser.of(account)


def record(session: Session, action: str, outcome: str, *, target: str = "",
           actor: str | None = None, **details: Any) -> None:
    """Audit an action of the current request (never secrets, codes or message content)."""
    who = actor or (current_user.login if current_user.is_authenticated else "anonyme")
    details.setdefault("ip", request.remote_addr or "")
    audit.record(session, actor=who, action=action, target=target, outcome=outcome,
                 request=details)


def operator_required(view: F) -> F:
    """Only operators (``Account.is_operator``) may call ``view``."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if not current_user.is_operator:
            raise Forbidden("Cette page est réservée aux opérateurs de la messagerie.")
        return view(*args, **kwargs)

    return cast(F, wrapper)


FRAGMENT_HEADER = "X-MSS-Fragment"


def wants_fragment() -> bool:
    """True when a script asks only for the part of the page it refreshes (``js/http.js``
    ``fragment()`` sends ``X-MSS-Fragment: 1``): the view renders the same template's fragment,
    never a second copy of the markup (DESIGN.md, "The webmail's front end")."""
    return request.headers.get(FRAGMENT_HEADER) == "1"
