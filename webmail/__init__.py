"""The webmail: a Flask application (factory ``create_app``), one blueprint per area.

Areas: ``auth`` (connexion : carte CPS, mot de passe + code), ``psc`` (connexion avec Pro Santé
Connect), ``register`` (inscription), ``account`` (mon compte), ``orgs`` (boîtes
organisationnelles), ``operator`` (pages de l'opérateur). The mail views (``mail``) register the
same way and add their navigation entries (``webmail.nav``); ``webmail.auth.landing`` decides where
"/" and a successful login lead.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, redirect, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from core.db import Database
from core.localtime import french_datetime
from core.mailer import Mailer, SpoolMailer, mail_spool
from core.settings import Settings
from trust_space.naming import profession_label
from webmail import errors, nav, security
from webmail.auth.sms import SmsProvider, provider_for
from webmail.context import PeerCheck, Webmail, load_user, wants_fragment
from webmail.sessions import DbSessionInterface

log = logging.getLogger("mss.webmail")

DEFAULT_CONFIG: dict[str, Any] = {
    "SESSION_COOKIE_NAME": "mss_session",
    "SESSION_COOKIE_SECURE": True,
    "SESSION_COOKIE_HTTPONLY": True,
    # Lax, not Strict: the link in a notification e-mail must open the webmail logged in.
    # Cross-site POSTs are refused anyway (Lax, and the CSRF token on every form).
    "SESSION_COOKIE_SAMESITE": "Lax",
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    "RATELIMIT_STORAGE_URI": "mss-db://",  # webmail.limits: shared by every process
    "RATELIMIT_HEADERS_ENABLED": False,
    "RATE_LOGIN": "30 per minute",
    "RATE_CODE": "30 per minute",
    "RATE_REGISTER": "60 per minute",
    "TEMPLATES_AUTO_RELOAD": False,
}


def create_app(settings: Settings, db: Database | None = None,
               test_config: Mapping[str, Any] | None = None, *, mailer: Mailer | None = None,
               sms: SmsProvider | None = None,
               acl_sync: Callable[[], None] | None = None,
               peer_check: PeerCheck | None = None) -> Flask:
    """The webmail application for ``settings``.

    ``mailer``: where e-mails go (default: files under DATA_DIR/spool/mail); ``sms``: the SMS
    provider (default: ``MSS_SMS_PROVIDER``); ``acl_sync``: regenerates the mail store's ACLs
    after a delegation change (default: ``mailstore.acl.sync`` when the store is configured);
    ``peer_check``: probes the peers' relays for the operator's "Vérifier maintenant" (``mss
    run`` gives ``mss.peer_probe.checker``; without it the button says it is unavailable).
    """
    app = Flask(__name__)
    app.config.update(DEFAULT_CONFIG)
    app.config["SECRET_KEY"] = hmac.new(settings.secret(), b"mss webmail flask",
                                        hashlib.sha256).hexdigest()
    app.config["WTF_CSRF_TIME_LIMIT"] = settings.session_timeout_minutes * 60
    app.config.update(test_config or {})
    db = db or Database(settings.effective_database_url)
    app.extensions["mss"] = Webmail(
        settings, db, mailer or SpoolMailer(mail_spool(settings.data_dir)),
        sms or provider_for(settings), acl_sync or _mailstore_acl_sync(settings, db),
        peer_check)
    app.session_interface = DbSessionInterface(
        db, timedelta(minutes=settings.session_timeout_minutes))
    security.init_app(app)
    security.login_manager.user_loader(load_user)
    nav.init_app(app)
    errors.register(app)
    _register_blueprints(app)
    app.add_url_rule("/", "home", _home)
    app.add_template_filter(_paris_time, "datetime")
    app.add_template_global(wants_fragment, "wants_fragment")
    app.add_template_filter(profession_label, "profession")  # "Infirmière" for Mme
    app.config.setdefault("OPERATOR_NAME", settings.operator_name)
    return app


def _paris_time(value: datetime | None) -> str:
    """A UTC time as French users read it: Paris time, ``22/11/2026 à 14:05``."""
    return french_datetime(value)


def _register_blueprints(app: Flask) -> None:
    from webmail import auth, autoconfig, mail, operator
    from webmail.account import views as account
    from webmail.contacts import views as contacts
    from webmail.operator import monitoring
    from webmail.orgs import views as orgs
    from webmail.register import views as register

    for module in (auth, register, account, orgs, operator, mail, monitoring, autoconfig,
                   contacts):
        module.init_app(app)


def _home() -> Response:
    from webmail.auth.landing import home_url

    if current_user.is_authenticated:
        return redirect(home_url())
    return redirect(url_for("auth.login"))


def _mailstore_acl_sync(settings: Settings, db: Database) -> Callable[[], None]:
    """Rewrite Dovecot's ACL files from the delegations, when this data directory has a
    configured mail store (``mss run`` with the mailstore role wrote its configuration)."""

    def sync() -> None:
        from mailstore import acl, config

        paths = config.DovecotPaths.from_settings(settings)
        if not Path(paths.conf).exists():
            log.info("ACL non synchronisées : magasin de courrier non configuré ici")
            return
        acl.sync(db, paths, config.ProcessUsers.detect(), settings)

    return sync
