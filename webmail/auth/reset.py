"""Mot de passe oublié (issue #15 item 2): a code to the usual address or the mobile, or the
CPS card (no code), then a new password, which also clears the lock-out.

No enumeration: an unknown identifier, an account without that destination and a real one get
the same pages, in about the same time (the code leaves in the background, so the answer never
waits for the mail or SMS transport). Limits: per address (Flask-Limiter), and per identifier
(codes asked, wrong codes: ``PhantomLocks``, known and unknown identifiers alike); wrong codes
also count into the account's one lock-out (``count_failure``), which the reset then clears.
Every step is audited, never with the code or the password.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from core.db import utcnow
from core.errors import MssError
from trust_space.accounts import find_account, set_password
from trust_space.errors import AccountLocked
from trust_space.models import Account, AccountKind, AccountState, OtpChannel
from webmail.account.destinations import tell_holder
from webmail.auth import otp
from webmail.auth.codes import deliver_code
from webmail.auth.forms import NewPasswordForm, ResetRequestForm
from webmail.auth.rules import PhantomLocks, card_account, count_failure, minutes_fr, minutes_until
from webmail.context import extension, mss, real_app, record
from webmail.errors import DeliveryFailed
from webmail.forms import CodeForm, EmptyForm
from webmail.security import code_limit, limiter, login_limit
from webmail.sessions import revoke_all
from webmail.tls import CLIENT_CERT_ENV

log = logging.getLogger("mss.webmail")
bp = Blueprint("reset", __name__, url_prefix="/connexion/mot-de-passe-oublie")
STATE = "password_reset"
REQUESTS_PER_WINDOW = 3  # codes asked per identifier within the lock window
NEW_PASSWORD_MINUTES = 10  # how long a proven reset waits for the new password


@dataclass
class Guards:
    """Per-identifier limits of the reset (in memory, like Flask-Limiter's counters)."""

    requests: PhantomLocks
    wrong_codes: PhantomLocks


def init_app(app: Flask) -> None:
    s = app.extensions["mss"].settings
    app.extensions["mss.reset"] = Guards(
        PhantomLocks("reset-request", REQUESTS_PER_WINDOW, s.login_lock_minutes),
        PhantomLocks("reset-code", s.login_max_failures, s.login_lock_minutes))
    app.register_blueprint(bp)


def _guards() -> Guards:
    return extension(Guards, "mss.reset")


def _code_key() -> bytes:
    return str(current_app.config["SECRET_KEY"]).encode() + b"|password-reset"


def _card_label() -> bool:
    return bool(request.environ.get(CLIENT_CERT_ENV))


def _page(template: str, status: int = 200, **context: Any) -> Response:
    html = render_template(f"auth/{template}", **context)
    return Response(html, status=status, mimetype="text/html")


def _start_page(form: ResetRequestForm, error: str | None = None, status: int = 200
                ) -> Response:
    return _page("reset.html", status, form=form, error=error, card=_card_label(),
                 card_form=EmptyForm())


@bp.get("")
def start() -> Response:
    return _start_page(ResetRequestForm(formdata=None))


@bp.post("")
@limiter.limit(login_limit)
def request_code() -> Response:
    form = ResetRequestForm()
    if not form.validate_on_submit():
        return _start_page(form, status=400)
    identifier, channel = form.identifier.data.strip(), OtpChannel(form.channel.data)
    with mss().db.transaction() as db:
        account = find_account(db, identifier)
        key = f"account:{account.id}" if account is not None else identifier
        try:
            _guards().requests.check(db, key)
        except AccountLocked as exc:
            record(db, "password.reset.request", "throttled", actor=identifier[:254],
                   target=account.login if account else "")
            return _start_page(form, _too_many("demandes", exc), 429)
        _guards().requests.fail(db, key)
        destination = _destination(account, channel)
        challenge, code = otp.start_code(channel, _code_key(), utcnow(),
                                         account.id if account and destination else 0)
        record(db, "password.reset.request", "sent" if destination else "not_sent",
               actor=identifier[:254], target=account.login if account else "",
               channel=channel.value)
    session[STATE] = {"challenge": challenge.to_dict(), "key": key, "method": channel.value,
                      "until": 0.0}
    if destination:
        _send_in_background(channel.value, destination, code)
    return redirect(url_for("reset.code"))


def _too_many(what: str, exc: AccountLocked) -> str:
    minutes = minutes_fr(minutes_until(exc.locked_until, utcnow()))
    return f"Trop de {what} pour cet identifiant : réessayez dans {minutes}."


def _destination(account: Account | None, channel: OtpChannel) -> str:
    """The usual address or mobile of a person's active account, or "" (nothing is sent)."""
    if account is None or account.kind is not AccountKind.PROFESSIONAL \
            or account.state is not AccountState.ACTIVE or account.professional is None:
        return ""
    pro = account.professional
    return pro.mobile if channel is OtpChannel.SMS else pro.usual_email


def _send_in_background(channel: str, destination: str, code: str) -> None:
    """Send the code without making the answer wait for the transport (no timing that would
    tell an existing account from an unknown one)."""
    app = real_app()

    def send() -> None:
        with app.app_context():
            try:
                deliver_code(channel, destination, code, "reset")
            except DeliveryFailed:
                log.warning("code de réinitialisation non envoyé (canal %s)", channel)

    threading.Thread(target=send, name="mss-reset-code", daemon=True).start()


def _state() -> dict[str, Any] | None:
    data = session.get(STATE)
    return data if isinstance(data, dict) else None


@bp.route("/code", methods=["GET", "POST"])
@limiter.limit(code_limit, methods=["POST"])
def code() -> Response:
    state = _state()
    if state is None:
        return redirect(url_for("reset.start"))
    form = CodeForm()
    sms = state["method"] == OtpChannel.SMS.value
    if not form.validate_on_submit():
        return _page("reset_code.html", 400 if request.method == "POST" else 200, form=form,
                     sms=sms)
    try:
        with mss().db.read() as db:
            _guards().wrong_codes.check(db, state["key"])
    except AccountLocked as exc:
        session.pop(STATE, None)
        flash(_too_many("codes incorrects", exc), "error")
        return redirect(url_for("reset.start"))
    return _check_code(state, form, sms)


def _check_code(state: dict[str, Any], form: CodeForm, sms: bool) -> Response:
    challenge, now = otp.Challenge.from_dict(state["challenge"]), utcnow()
    result = otp.check(challenge, form.code.data, _code_key(), now)
    if result is otp.CodeResult.OK and not challenge.account_id:
        result = otp.CodeResult.WRONG  # nobody received a code (cannot happen: belt and braces)
    with mss().db.transaction() as db:
        account = db.get(Account, challenge.account_id) if challenge.account_id else None
        target = account.login if account else ""
        record(db, "password.reset.code", result.value, target=target, actor=target or "anonyme")
        if result is otp.CodeResult.WRONG:
            _count_wrong(db, state["key"], account, now)
    if result is otp.CodeResult.OK:
        state.update(challenge=challenge.to_dict(),
                     until=(now + timedelta(minutes=NEW_PASSWORD_MINUTES)).timestamp())
        session[STATE] = state
        return redirect(url_for("reset.new_password"))
    if result is not otp.CodeResult.WRONG:
        session.pop(STATE, None)
        flash("Ce code n'est plus valable : recommencez pour en recevoir un nouveau.", "error")
        return redirect(url_for("reset.start"))
    state["challenge"] = challenge.to_dict()
    session[STATE] = state
    return _page("reset_code.html", 401, form=CodeForm(formdata=None), sms=sms,
                 error="Code incorrect.")


def _count_wrong(db: Session, key: str, account: Account | None, now: datetime) -> None:
    """A wrong reset code: the identifier's limit, and the account's one lock-out (a guess
    at the code is a guess at the account; the reset itself stays possible, within limits)."""
    _guards().wrong_codes.fail(db, key)
    if account is None:
        return
    s = mss().settings
    try:
        count_failure(account, now, s.login_max_failures, s.login_lock_minutes)
    except AccountLocked:
        record(db, "password.reset.code", "account_locked", target=account.login,
               actor=account.login)


@bp.post("/carte")
@limiter.limit(login_limit)
def card() -> Response:
    """With a valid CPS card, no code is needed."""
    pem = request.environ.get(CLIENT_CERT_ENV)
    try:
        with mss().db.transaction() as db:
            account = card_account(db, pem, mss().trust_store())
            record(db, "password.reset.card", "ok", actor=account.login, target=account.login)
            account_id = account.id
    except MssError as exc:
        with mss().db.transaction() as db:
            record(db, "password.reset.card", exc.code, actor="carte")
        raise
    challenge = otp.Challenge(account_id, "card", "", "", 0.0)
    until = (utcnow() + timedelta(minutes=NEW_PASSWORD_MINUTES)).timestamp()
    session[STATE] = {"challenge": challenge.to_dict(), "key": f"account:{account_id}",
                      "method": "card", "until": until}
    return redirect(url_for("reset.new_password"))


def _proven_account_id() -> int | None:
    """The account whose reset was proven (code or card) less than 10 minutes ago."""
    state = _state()
    if state is None or not state.get("until") or state["until"] < utcnow().timestamp():
        return None
    account_id = state["challenge"].get("account_id")
    return int(account_id) if account_id else None


@bp.route("/nouveau", methods=["GET", "POST"])
@limiter.limit(code_limit, methods=["POST"])
def new_password() -> Response:
    account_id = _proven_account_id()
    if account_id is None:
        session.pop(STATE, None)
        flash("Demandez d'abord un code de réinitialisation.", "info")
        return redirect(url_for("reset.start"))
    form = NewPasswordForm()
    if not form.validate_on_submit():
        return _page("reset_password.html", 400 if request.method == "POST" else 200,
                     form=form)
    state = _state()
    assert state is not None  # _proven_account_id found it
    method = str(state["method"])
    with mss().db.transaction() as db:
        account = db.get(Account, account_id)
        assert account is not None
        set_password(account, form.new.data)  # also clears the lock and both counters
        closed = revoke_all(db, account.id)
        record(db, "password.reset", "ok", actor=account.login, target=account.login,
               method=method, sessions_closed=closed)
        usual = account.professional.usual_email if account.professional else ""
    tell_holder(usual, "votre mot de passe a été réinitialisé et vos sessions fermées")
    session.pop(STATE, None)
    flash("Votre mot de passe a été changé et votre accès débloqué : connectez-vous avec le "
          "nouveau mot de passe.", "success")
    return redirect(url_for("auth.login"))
