"""HTTP-level protections: the Flask extensions (CSRF, log-in, rate limits) and the security
headers added to every response."""

from __future__ import annotations

from flask import Flask, Response, current_app, flash, redirect, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response as WerkzeugResponse

csrf = CSRFProtect()
login_manager = LoginManager()
# Counts in mss's database (webmail.limits): RATELIMIT_STORAGE_URI = "mss-db://".
limiter = Limiter(key_func=get_remote_address)

# No inline script or style anywhere: everything comes from /static (CSP level 2).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin: Flask-WTF checks the Referer of HTTPS form posts; other sites get none.
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def rate(name: str) -> str:
    """The configured limit ``RATE_<NAME>`` (Flask-Limiter syntax, e.g. "20 per minute")."""
    return str(current_app.config[f"RATE_{name.upper()}"])


def login_limit() -> str:
    return rate("login")


def code_limit() -> str:
    return rate("code")


def register_limit() -> str:
    return rate("register")


def _unauthorized() -> WerkzeugResponse:
    """Not logged in: to the log-in page, saying why (timed out or never logged in)."""
    if getattr(session, "expired", False):
        flash("Votre session a expiré après une période d'inactivité : reconnectez-vous.",
              "info")
    else:
        flash("Connectez-vous pour accéder à cette page.", "info")
    if request.method == "GET" and request.path != "/":  # back to this page once logged in
        wanted = request.full_path if request.query_string else request.path
        return redirect(url_for("auth.login", next=wanted))
    return redirect(url_for("auth.login"))


def allow_form_action(app: Flask, origin: str) -> None:
    """Let forms lead to ``origin`` too: CSP ``form-action`` also governs the redirects that
    follow a form, and Chromium stops there without a word — « Se connecter avec Pro Santé
    Connect » (a POST redirected to the provider) and the log-out ending its session."""
    app.config["CSP"] = app.config.get("CSP", CSP).replace(
        "form-action 'self'", f"form-action 'self' {origin}")


def _add_headers(response: Response) -> Response:
    # A view's own CSP (a message's frame, an attachment) stays.
    response.headers.setdefault("Content-Security-Policy", current_app.config.get("CSP", CSP))
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        # Pages show personal data: never kept by the browser or a proxy.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    return response


def init_app(app: Flask) -> None:
    """Install the extensions and the headers on ``app``."""
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.session_protection = None  # sessions are server-side (webmail.sessions)
    login_manager.unauthorized_handler(_unauthorized)
    import webmail.limits  # noqa: F401  (registers the "mss-db" storage scheme)

    limiter.init_app(app)
    app.after_request(_add_headers)
