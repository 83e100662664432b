"""Pages of the operator (``Account.is_operator``), one blueprint per page group:
``registrations`` (pending registrations, validate / refuse, through ``decision``, the
operator's decision that ``mss registration`` takes too), ``accounts`` (a person's account:
unlock, suspend, code channel, close), ``annuaire`` (the national directory feed),
``whitelist`` (the whitelist followed from its URL), ``monitoring`` (queue, refusals, the peers
with the rows of ``peers``, audit trail, metrics).

Every operator page asks for an operator logged in with their authenticator app (TOTP), the
one second factor operator accounts have: ``require_operator``.
"""

from __future__ import annotations

from flask import Flask, session
from flask_login import current_user

from webmail import nav
from webmail.errors import Forbidden


def init_app(app: Flask) -> None:
    """Register the registrations, accounts, directory-feed and whitelist pages (the relay's
    pages, ``monitoring``, register after the mail views) and the "Opérateur" entry."""
    from webmail.operator import accounts, annuaire, registrations, whitelist

    app.register_blueprint(registrations.bp)
    accounts.init_app(app)
    annuaire.init_app(app)
    whitelist.init_app(app)
    nav.add(app, "operator.registrations", "Opérateur", order=90, operator_only=True,
            prefix="/operateur")


def require_operator() -> None:
    """Raise unless the session is an operator's opened with the TOTP code (a password alone
    never opens these pages; an operator account has no other second factor).

    Raises:
        Forbidden: logged in, but not an operator, or not through TOTP.
    """
    if not current_user.is_operator:
        raise Forbidden("Cette page est réservée aux opérateurs de la messagerie.")
    if session.get("login_method") != "totp":
        raise Forbidden("Les pages de l'opérateur demandent une connexion avec le code de "
                        "l'application d'authentification : déconnectez-vous, puis "
                        "reconnectez-vous avec ce code.")
