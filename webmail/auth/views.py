"""Connexion: CPS card, or password then a one-time code; déconnexion (with Pro Santé
Connect's, ``webmail.auth.psc``, for the sessions it opened).

Each view parses the form, calls the log-in decisions (``webmail.auth.rules``, ``trust_space``,
``certs``) and maps the outcome to a page. Successes and failures are audited; codes and
passwords never reach a log, an audit record or a URL.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID
from flask import Blueprint, Flask, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from core.db import utcnow
from core.errors import MssError
from trust_space.accounts import authenticate_password, find_account
from trust_space.errors import AccountLocked, AuthenticationFailed
from trust_space.models import Account, OtpChannel
from webmail import nav
from webmail.auth import otp
from webmail.auth.codes import deliver_code
from webmail.auth.forms import LoginForm
from webmail.auth.landing import NEXT, after_login, safe_next
from webmail.auth.rules import (
    PhantomLocks,
    card_account,
    check_not_locked,
    check_webmail_access,
    code_channel,
    code_destination,
    count_failure,
    failure_warning,
    locked_message,
)
from webmail.context import WebUser, extension, mss, record
from webmail.forms import CodeForm, EmptyForm
from webmail.security import code_limit, limiter, login_limit
from webmail.sessions import ServerSession
from webmail.tls import CLIENT_CERT_ENV

bp = Blueprint("auth", __name__)
PENDING = "pending_login"
PENDING_NEXT = "pending_login_next"  # the page that asked for the log-in (safe_next)


def init_app(app: Flask) -> None:
    s = app.extensions["mss"].settings
    app.extensions["mss.phantoms"] = PhantomLocks("phantom", s.login_max_failures,
                                                  s.login_lock_minutes)
    app.register_blueprint(bp)
    from webmail.auth import reset  # the "Mot de passe oublié ?" pages (issue #15 item 2)

    reset.init_app(app)
    nav.add(app, "account.overview", "Mon compte", order=80, prefix="/compte")


def _card_label() -> str | None:
    """Who the presented certificate says it is (not validated: display only)."""
    pem = request.environ.get(CLIENT_CERT_ENV)
    if not pem:
        return None
    try:
        subject = x509.load_pem_x509_certificate(pem.encode("ascii")).subject
        parts = [str(a.value) for oid in (NameOID.GIVEN_NAME, NameOID.SURNAME, NameOID.COMMON_NAME)
                 for a in subject.get_attributes_for_oid(oid)]
        return " ".join(parts[:2]) if len(parts) > 1 else (parts[0] if parts else "?")
    except ValueError:
        return "certificat illisible"


def _login_page(form: LoginForm, error: str | None = None, status: int = 200) -> Response:
    html = render_template("auth/login.html", form=form, error=error, card=_card_label(),
                           card_form=EmptyForm(), next=safe_next(request.args.get(NEXT)))
    return Response(html, status=status, mimetype="text/html")


@bp.get("/connexion")
def login() -> Response:
    from webmail.auth.psc import to_public_host

    if current_user.is_authenticated:
        return redirect(after_login(request.args.get(NEXT)))
    return to_public_host() or _login_page(LoginForm())


@bp.post("/connexion")
@limiter.limit(login_limit)
def login_post() -> Response:
    form = LoginForm()
    if not form.validate_on_submit():
        return _login_page(form, status=400)
    identifier = form.identifier.data.strip()
    try:
        account_id = _check_password(identifier, form.password.data)
        _start_challenge(account_id)
    except AuthenticationFailed as exc:
        return _login_page(LoginForm(identifier=identifier), exc.message, 401)
    wanted = safe_next(request.args.get(NEXT))
    if wanted:
        session[PENDING_NEXT] = wanted
    else:
        session.pop(PENDING_NEXT, None)
    return redirect(url_for("auth.code"))


def _check_password(identifier: str, password: str) -> int:
    """The account id once the password is right; failures are audited and counted.

    Raises:
        AuthenticationFailed (and its AccountLocked, PendingValidation…): refused, with the
            French answer (lock duration, last-try warning) in its message.
    """
    s = mss().settings
    phantoms: PhantomLocks = mss_phantoms()
    refusal: AuthenticationFailed | None = None
    with mss().db.transaction() as db:  # committed even on refusal: the failure counts
        unknown = find_account(db, identifier) is None
        try:
            if unknown:
                phantoms.check(db, identifier)
            account = authenticate_password(db, identifier, password,
                                            max_failures=s.login_max_failures,
                                            lock_minutes=s.login_lock_minutes)
            check_webmail_access(db, account)
        except AuthenticationFailed as exc:
            if unknown and not isinstance(exc, AccountLocked):
                phantoms.fail(db, identifier)
            record(db, "login.password", exc.code, actor=identifier[:254], target="")
            refusal = _refusal(db, exc, identifier, unknown)
        else:
            record(db, "login.password", "ok", actor=account.login, target=account.login)
    if refusal is not None:
        raise refusal
    return account.id


def _refusal(db: Session, exc: AuthenticationFailed, identifier: str,
             unknown: bool) -> AuthenticationFailed:
    """``exc`` with the answer the person reads: how long a lock lasts, the last try before
    it. An unknown identifier gets the same words at the same count (``PhantomLocks``)."""
    s = mss().settings
    if isinstance(exc, AccountLocked):
        exc.message = locked_message(exc.locked_until, utcnow())
    elif type(exc) is AuthenticationFailed:
        account = None if unknown else find_account(db, identifier)
        failures = mss_phantoms().count(db, identifier) if unknown else \
            (account.failed_attempts or 0) if account is not None else 0
        exc.message += failure_warning(failures, s.login_max_failures, s.login_lock_minutes)
    return exc


def mss_phantoms() -> PhantomLocks:
    return extension(PhantomLocks, "mss.phantoms")


def _start_challenge(account_id: int) -> None:
    """Create the code challenge and send the code by the account's channel."""
    with mss().db.transaction() as db:
        account = db.get(Account, account_id)
        assert account is not None
        destination, hint = code_destination(account)
        channel = code_channel(account)
        challenge, code = otp.start(account, channel, hint, _code_key(), utcnow())
        # A TOTP code is read from the holder's app: nothing is sent (issue #15 item 9).
        record(db, "login.code_sent" if code is not None else "login.totp_asked", "ok",
               actor=account.login, target=account.login, channel=channel.value)
    if code is not None:
        deliver_code(challenge.channel, destination, code)
    session[PENDING] = challenge.to_dict()


def _code_key() -> bytes:
    from flask import current_app

    return str(current_app.config["SECRET_KEY"]).encode()


def _pending() -> otp.Challenge | None:
    data = session.get(PENDING)
    return otp.Challenge.from_dict(data) if isinstance(data, dict) else None


@bp.route("/connexion/code", methods=["GET", "POST"])
@limiter.limit(code_limit, methods=["POST"])
def code() -> Response:
    challenge = _pending()
    if challenge is None:
        flash("Saisissez d'abord votre identifiant et votre mot de passe.", "info")
        return redirect(url_for("auth.login"))
    form = CodeForm()
    if not form.validate_on_submit():
        return _code_page(form, challenge, status=400 if request.method == "POST" else 200)
    return _verify_code(challenge, form)


def _code_page(form: CodeForm, challenge: otp.Challenge, error: str | None = None,
               status: int = 200) -> Response:
    html = render_template("auth/code.html", form=form, challenge=challenge, error=error,
                           resend_form=EmptyForm(), totp=challenge.channel == "totp")
    return Response(html, status=status, mimetype="text/html")


def _verify_code(challenge: otp.Challenge, form: CodeForm) -> Response:
    s, now = mss().settings, utcnow()
    wanted = session.get(PENDING_NEXT)  # read before the new session drops it
    warning = ""
    with mss().db.transaction() as db:
        account = db.get(Account, challenge.account_id)
        assert account is not None
        try:
            check_not_locked(account, now)
            result = _check_challenge(db, account, challenge, form.code.data, now)
            if result is otp.CodeResult.OK:
                _complete_login(account, challenge.channel)
                record(db, "login", "ok", actor=account.login, target=account.login,
                       method=challenge.channel)
            elif result is not otp.CodeResult.WRONG:
                session.pop(PENDING, None)
                record(db, "login.code", result.value, actor=account.login, target=account.login)
                flash("Ce code n'est plus valable : reconnectez-vous pour en recevoir un "
                      "nouveau.", "error")
                return redirect(url_for("auth.login"))
            else:
                count_failure(account, now, s.login_max_failures, s.login_lock_minutes)
                record(db, "login.code", "wrong", actor=account.login, target=account.login)
                warning = failure_warning(account.code_failures, s.login_max_failures,
                                          s.login_lock_minutes)
        except AccountLocked as exc:
            session.pop(PENDING, None)
            record(db, "login.code", exc.code, actor=account.login, target=account.login)
            return _login_page(LoginForm(), locked_message(exc.locked_until, now), 403)
    if result is otp.CodeResult.OK:  # the landing is chosen once the login is committed
        return redirect(after_login(wanted))
    session[PENDING] = challenge.to_dict()
    return _code_page(CodeForm(formdata=None), challenge, "Code incorrect." + warning, 401)


def _check_challenge(db: Session, account: Account, challenge: otp.Challenge, code: str,
                     now: datetime) -> otp.CodeResult:
    """Check an e-mail/SMS code, or a TOTP code (same attempt limit)."""
    if challenge.channel != OtpChannel.TOTP.value:
        return otp.check(challenge, code, _code_key(), now)
    if challenge.attempts >= otp.MAX_ATTEMPTS:
        return otp.CodeResult.EXHAUSTED
    challenge.attempts += 1
    seed = otp.open_seed(account.totp_secret or "", mss().settings.secret())
    ok = otp.accept_totp(db, account, seed, code, now)
    return otp.CodeResult.OK if ok else otp.CodeResult.WRONG


def _complete_login(account: Account, method: str) -> None:
    """A new session (new token: no fixation) for ``account``."""
    assert isinstance(session, ServerSession)
    session.regenerate()
    login_user(WebUser.of(account))
    session["login_method"] = method
    account.last_login_at = utcnow()
    # A complete login (code or card) is what clears both counters (issue #14, item 4).
    account.failed_attempts = 0
    account.code_failures = 0


@bp.post("/connexion/code/renvoi")
@limiter.limit(code_limit)
def resend() -> Response:
    challenge = _pending()
    if challenge is None:
        return redirect(url_for("auth.login"))
    code = otp.renew(challenge, _code_key(), utcnow())
    if code is None:
        flash("Un code vient déjà d'être envoyé : patientez une minute avant d'en demander un "
              "autre.", "error")
        return redirect(url_for("auth.code"))
    with mss().db.transaction() as db:
        account = db.get(Account, challenge.account_id)
        assert account is not None
        destination, _hint = code_destination(account)
        record(db, "login.code_sent", "ok", actor=account.login, target=account.login,
               channel=challenge.channel, resend=challenge.sends)
    deliver_code(challenge.channel, destination, code)
    session[PENDING] = challenge.to_dict()
    flash("Un nouveau code vous a été envoyé.", "success")
    return redirect(url_for("auth.code"))


@bp.post("/connexion/carte")
@limiter.limit(login_limit)
def card_login() -> Response:
    EmptyForm().validate_on_submit()  # CSRF is checked by CSRFProtect before the view
    pem = request.environ.get(CLIENT_CERT_ENV)
    try:
        with mss().db.transaction() as db:
            account = card_account(db, pem, mss().trust_store())
            check_webmail_access(db, account)
            _complete_login(account, "card")
            record(db, "login", "ok", actor=account.login, target=account.login, method="card")
    except MssError as exc:
        with mss().db.transaction() as db:
            record(db, "login.card", exc.code, actor="carte")
        raise
    return redirect(after_login(request.args.get(NEXT)))


@bp.post("/deconnexion")
def logout() -> Response:
    from webmail.auth.psc import ID_TOKEN, end_session_url

    # A session opened by Pro Santé Connect ends there too (RP-Initiated Logout), else the
    # next "Se connecter avec Pro Santé Connect" on this computer would need no sign-in.
    provider = end_session_url(session.get(ID_TOKEN)) \
        if session.get("login_method") == "psc" else None
    if current_user.is_authenticated:
        with mss().db.transaction() as db:
            record(db, "logout", "ok", target=current_user.login, provider=bool(provider))
    logout_user()
    assert isinstance(session, ServerSession)
    session.regenerate()
    flash("Vous êtes déconnecté.", "success")
    return redirect(provider or url_for("auth.login"))
