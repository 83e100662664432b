"""Errors of the webmail, and the one place where every error becomes an HTTP page
(CONVENTIONS.md, 4): ``register(app)``.

Domain errors (``MssError`` from trust_space, certs…) carry a French message that is shown as is;
their ``code`` picks the HTTP status. Nothing secret is in a message (the domain guarantees it).
"""

from __future__ import annotations

import logging

from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from core.errors import MssError

log = logging.getLogger("mss.webmail")


class WebmailError(MssError):
    """Base of the webmail's own errors; ``status`` is the HTTP status of its page."""

    code = "webmail"
    status = 400
    title = "Action impossible"


class CardLoginRefused(WebmailError):
    """A presented card certificate cannot log anyone in (absent, invalid or unknown)."""

    code = "card_refused"
    status = 403
    title = "Connexion par carte CPS refusée"


class CardNotRegistered(CardLoginRefused):
    """A valid card whose holder has no account yet: its page offers to register with it."""

    code = "card_not_registered"
    offer_registration = True


class PscLoginRefused(WebmailError):
    """Pro Santé Connect did not prove who is there, or the proven person may not log in
    (issue #16). ``reason`` is what the audit trail records (state, nonce, audience, expired,
    acr, denied, unavailable…); the message is what the person reads."""

    code = "psc_refused"
    status = 403
    title = "Connexion avec Pro Santé Connect refusée"

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        if status is not None:
            self.status = status


class PscNotRegistered(PscLoginRefused):
    """Someone Pro Santé Connect knows and the directory does not: its page offers to register
    with the identity PSC gave (kept in the session by ``webmail.auth.psc``)."""

    code = "psc_not_registered"
    offer_registration = "psc"


class Forbidden(WebmailError):
    """The logged-in person may not do this (role, operator pages)."""

    code = "forbidden"
    status = 403
    title = "Accès refusé"


class DeliveryFailed(WebmailError):
    """A one-time code or an e-mail could not be sent."""

    code = "delivery_failed"
    status = 503
    title = "Envoi impossible"


# MssError.code → HTTP status, for errors raised by the packages below the webmail.
_STATUS = {
    "not_found": 404, "forbidden": 403, "authentication_failed": 401, "account_locked": 403,
    "account_suspended": 403, "pending_validation": 403, "untrusted": 403, "expired": 403,
    "revoked": 403, "wrong_purpose": 403, "last_administrator": 409, "pki_missing": 503,
    "config": 500,
}
_TITLES = {"untrusted": "Certificat refusé", "expired": "Certificat refusé",
           "revoked": "Certificat refusé", "wrong_purpose": "Certificat refusé",
           "account_locked": "Accès temporairement bloqué"}
_HTTP_TEXT = {
    400: ("Requête invalide", "La requête n'a pas pu être comprise."),
    403: ("Accès refusé", "Vous n'avez pas accès à cette page."),
    404: ("Page introuvable", "Cette page n'existe pas ou n'existe plus."),
    405: ("Méthode non permise", "Cette action n'est pas possible ici."),
    413: ("Envoi trop volumineux", "Les données envoyées dépassent la taille permise."),
    429: ("Trop de tentatives", "Trop de demandes en peu de temps : patientez une minute "
                                "avant de réessayer."),
    500: ("Erreur interne", "Une erreur inattendue s'est produite ; elle a été consignée. "
                            "Réessayez dans un instant."),
}


def _page(title: str, message: str, status: int,
          offer_registration: bool | str = False) -> tuple[str, int]:
    return render_template("error.html", title=title, message=message, status=status,
                           offer_registration=offer_registration), status


def register(app: Flask) -> None:
    """Install the error handlers: the only place errors become HTTP responses."""

    @app.errorhandler(MssError)
    def mss_error(exc: MssError) -> tuple[str, int]:
        status = getattr(exc, "status", None) or _STATUS.get(exc.code, 400)
        title = (getattr(exc, "title", None) or _TITLES.get(exc.code)
                 or _HTTP_TEXT.get(status, _HTTP_TEXT[400])[0])
        log.info("refus %s %s : %s", request.method, request.path, exc.code)
        return _page(title, exc.message, status, getattr(exc, "offer_registration", False))

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> tuple[str, int]:
        log.info("jeton CSRF refusé %s %s", request.method, request.path)
        return _page("Formulaire expiré", "Le formulaire a expiré ou ne provient pas de cette "
                     "messagerie. Rechargez la page et recommencez.", 400)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[str, int]:
        status = exc.code or 500
        title, text = _HTTP_TEXT.get(status, (exc.name, exc.description or ""))
        return _page(title, text, status)

    if app.testing:
        return  # let tests see the traceback

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[str, int]:
        log.exception("erreur interne %s %s", request.method, request.path)
        return _page(*_HTTP_TEXT[500], 500)
