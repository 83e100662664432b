"""Mon compte: where the one-time code goes (issue #15 item 1). A channel is saved only with a
destination that works: a new mobile, or the switch to SMS, is confirmed by a code sent to
that number before it is used; a new usual address by a code sent to it (``preferences`` in
``webmail.account.views`` calls ``start_email_change``); the usual address cannot be cleared while
codes go there. Every change asks for the web password again (a card session need not), and
nothing is written until it is valid: a refused form leaves channel, number and address as
they were. Routes live on the ``account`` blueprint; audited without codes or passwords.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import segno
from flask import current_app, flash, redirect, render_template, session, url_for
from flask_login import current_user
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from core.db import utcnow
from core.errors import MssError
from core.mailer import SIGNATURE, build_mail
from trust_space.accounts import _record_failure, verify_password
from trust_space.models import Account, OtpChannel
from webmail.account.forms import OtpChannelForm, TotpConfirmForm
from webmail.account.views import bp
from webmail.auth import otp
from webmail.auth.codes import deliver_code
from webmail.context import mss, record
from webmail.errors import DeliveryFailed
from webmail.forms import CodeForm

log = logging.getLogger("mss.webmail")
PENDING_CHANGE = "destination_change"
TOTP_PENDING = "totp_enrolment"
REAUTH_UNTIL = "reauth_until"
REAUTH_SECONDS = 600  # a confirmed password also covers the TOTP enrolment that follows
WRONG_PASSWORD = "Mot de passe incorrect."


def _account(db: Session) -> Account:
    account = db.get(Account, current_user.id)
    assert account is not None
    return account


def card_session() -> bool:
    return session.get("login_method") == "card"


def recently_confirmed() -> bool:
    """A card session, or the password given again less than 10 minutes ago."""
    return card_session() or float(session.get(REAUTH_UNTIL) or 0) > utcnow().timestamp()


def password_confirmed(db: Session, account: Account, given: str | None, action: str,
                       *, allow_recent: bool = False) -> bool:
    """True for a card session or the right web password. A wrong one is audited and counts
    into the account's one lock-out, like at the log-in page."""
    if card_session() or (allow_recent and recently_confirmed()):
        return True
    if account.password_hash and given and verify_password(account.password_hash, given):
        session[REAUTH_UNTIL] = utcnow().timestamp() + REAUTH_SECONDS
        return True
    s = mss().settings
    _record_failure(account, utcnow(), s.login_max_failures, s.login_lock_minutes)
    record(db, action, "wrong_password", target=account.login)
    return False


def _code_key() -> bytes:
    return str(current_app.config["SECRET_KEY"]).encode() + b"|destination"


# ---------------------------------------------------------------- the code channel
@bp.route("/code", methods=["GET", "POST"])
def otp_channel() -> Response | str:
    with mss().db.transaction() as db:
        account = _account(db)
        pro = account.professional
        form = OtpChannelForm(data={"channel": account.otp_channel.value,
                                    "mobile": pro.mobile if pro else ""})
        if form.validate_on_submit():
            answer = _change_channel(db, account, form)
            if answer is not None:
                return answer
        return render_template("account/otp.html", form=form, account=account, section="otp",
                               card=card_session(), pending=_pending())


def _channel_problem(account: Account, channel: OtpChannel, mobile: str
                     ) -> tuple[str, str] | None:
    """``(field, French error)`` when ``channel`` would have no destination; None if fine."""
    pro = account.professional
    if channel is OtpChannel.TOTP:
        return None
    if pro is None:
        return "channel", "Ce compte n'a ni adresse habituelle ni mobile : utilisez une " \
                          "application d'authentification."
    if channel is OtpChannel.SMS and not mobile:
        return "mobile", "Indiquez votre numéro de mobile pour recevoir le code par SMS."
    if channel is OtpChannel.EMAIL and not pro.usual_email:
        return "channel", "Indiquez d'abord votre adresse habituelle dans vos préférences."
    return None


def _change_channel(db: Session, account: Account, form: OtpChannelForm) -> Response | None:
    """Validate everything first, then apply or ask for a confirmation code. None: the form
    is shown again with its errors (nothing changed)."""
    channel, pro = OtpChannel(form.channel.data), account.professional
    mobile = (form.mobile.data or "").strip()
    problem = _channel_problem(account, channel, mobile)
    if problem is not None:
        getattr(form, problem[0]).errors = [problem[1]]
        return None
    mobile_changed = pro is not None and mobile != pro.mobile
    if not mobile_changed and channel is account.otp_channel and \
            (channel is not OtpChannel.TOTP or account.totp_secret):
        flash("Aucune modification : votre code de connexion arrive toujours au même endroit.",
              "info")
        return redirect(url_for("account.otp_channel"))
    if not password_confirmed(db, account, form.password.data, "account.otp_channel"):
        form.password.errors = [WRONG_PASSWORD]
        return None
    return _apply_channel(db, account, channel, mobile if mobile_changed else None, form)


def _apply_channel(db: Session, account: Account, channel: OtpChannel, new_mobile: str | None,
                   form: OtpChannelForm) -> Response | None:
    pro = account.professional
    sms_switch = channel is OtpChannel.SMS and channel is not account.otp_channel
    if new_mobile or sms_switch:  # the number is proven before it is used (or stored)
        if channel is not OtpChannel.SMS:
            _set_channel(db, account, channel)
        number = new_mobile or (pro.mobile if pro else "")
        error = start_change(db, account, OtpChannel.SMS, number, mobile=new_mobile,
                             channel=OtpChannel.SMS.value if channel is OtpChannel.SMS else None)
        if error:
            form.mobile.errors = [error]
            return None
        return redirect(url_for("account.confirm_change"))
    if pro is not None and new_mobile == "":  # the number cleared (codes do not go there)
        pro.mobile = ""
        record(db, "account.mobile", "cleared", target=account.login)
    if channel is OtpChannel.TOTP and not account.totp_secret:
        return redirect(url_for("account.totp"))  # chosen once the app is enrolled
    _set_channel(db, account, channel)
    flash("Votre moyen de recevoir le code de connexion est enregistré.", "success")
    return redirect(url_for("account.otp_channel"))


def _set_channel(db: Session, account: Account, channel: OtpChannel) -> None:
    if channel is not account.otp_channel:
        account.otp_channel = channel
        record(db, "account.otp_channel", "ok", target=account.login, channel=channel.value)


# ---------------------------------------------------------------- confirmation by a code
def start_change(db: Session, account: Account, via: OtpChannel, destination: str, *,
                 mobile: str | None = None, email: str | None = None,
                 channel: str | None = None) -> str | None:
    """Send a code to ``destination`` and keep the change waiting for it; the French error
    when the code could not be sent (nothing is waiting then)."""
    hint = (f"par SMS au {otp.mask_phone(destination)}" if via is OtpChannel.SMS
            else f"par courriel à {otp.mask_email(destination)}")
    challenge, code = otp.start_code(via, _code_key(), utcnow(), account.id, hint)
    try:
        deliver_code(via.value, destination, code, "confirm")
    except DeliveryFailed as exc:
        record(db, "account.confirm_sent", exc.code, target=account.login, channel=via.value)
        return exc.message
    record(db, "account.confirm_sent", "ok", target=account.login, channel=via.value)
    session[PENDING_CHANGE] = {"challenge": challenge.to_dict(), "mobile": mobile,
                               "email": email, "channel": channel}
    return None


def _pending() -> dict[str, Any] | None:
    data = session.get(PENDING_CHANGE)
    return data if isinstance(data, dict) else None


@bp.route("/confirmer", methods=["GET", "POST"])
def confirm_change() -> Response | str:
    pending = _pending()
    if pending is None:
        return redirect(url_for("account.otp_channel"))
    challenge = otp.Challenge.from_dict(pending["challenge"])
    back = "account.preferences" if pending.get("email") else "account.otp_channel"
    form, error = CodeForm(), None
    if form.validate_on_submit():
        result = otp.check(challenge, form.code.data, _code_key(), utcnow())
        if result is otp.CodeResult.OK and challenge.account_id == current_user.id:
            _apply_pending(pending)
            session.pop(PENDING_CHANGE, None)
            flash("C'est confirmé : votre changement est enregistré.", "success")
            return redirect(url_for(back))
        if result is not otp.CodeResult.WRONG:
            session.pop(PENDING_CHANGE, None)
            flash("Ce code n'est plus valable : rien n'a été changé, recommencez la "
                  "modification.", "error")
            return redirect(url_for(back))
        pending["challenge"] = challenge.to_dict()
        session[PENDING_CHANGE] = pending
        error = "Code incorrect."
    return render_template("account/confirm.html", form=form, challenge=challenge,
                           error=error, back=back, section="otp" if back.endswith("channel")
                           else "preferences")


def _apply_pending(pending: dict[str, Any]) -> None:
    with mss().db.transaction() as db:
        account = _account(db)
        pro = account.professional
        previous = pro.usual_email if pro is not None else ""
        if pro is not None and pending.get("mobile"):
            pro.mobile = str(pending["mobile"])
            record(db, "account.mobile", "ok", target=account.login,
                   mobile=otp.mask_phone(pro.mobile))
        if pro is not None and pending.get("email"):
            pro.usual_email = str(pending["email"])
            record(db, "account.usual_email", "ok", target=account.login,
                   usual_email=otp.mask_email(pro.usual_email))
        if pending.get("channel"):
            _set_channel(db, account, OtpChannel(str(pending["channel"])))
    tell_holder(previous, "votre adresse habituelle a été modifiée" if pending.get("email")
                else "votre numéro de mobile a été modifié" if pending.get("mobile")
                else "le moyen de recevoir votre code de connexion a été modifié")


def tell_holder(to: str, change: str) -> None:
    """A short notice of a security change to the usual address (the previous one when it
    changed), as mature services send: someone who stole a session learns nothing from it,
    the holder learns that it happened. Best effort: a transport failure is only logged."""

    if not to:
        return
    text = (f"Bonjour,\n\nSur votre messagerie sécurisée de santé, {change}. Si vous n'êtes "
            "pas à l'origine de ce changement, changez votre mot de passe (« Mot de passe "
            "oublié ? ») et prévenez votre opérateur." + SIGNATURE)
    try:
        mss().mailer.send(to, build_mail(to=to, sender=mss().sender,
                                         subject="Changement sur votre compte", text=text))
    except (MssError, OSError):
        log.warning("avis de changement non envoyé (messagerie sortante en erreur)")


# ---------------------------------------------------------------- TOTP enrolment
@bp.route("/code/application", methods=["GET", "POST"])
def totp() -> Response | str:
    seed = session.get(TOTP_PENDING) or otp.new_totp_seed()
    session[TOTP_PENDING] = seed
    form = TotpConfirmForm()
    if form.validate_on_submit():
        with mss().db.transaction() as db:
            account = _account(db)
            if not password_confirmed(db, account, form.password.data, "account.totp_enrol",
                                      allow_recent=True):
                form.password.errors = [WRONG_PASSWORD]
            elif otp.accept_totp(db, account, seed, form.code.data, utcnow()):
                account.totp_secret = otp.seal_seed(seed, mss().settings.secret())
                account.otp_channel = OtpChannel.TOTP
                record(db, "account.totp_enrol", "ok", target=account.login)
                session.pop(TOTP_PENDING, None)
                flash("Application d'authentification activée : elle vous donnera désormais "
                      "votre code de connexion.", "success")
                return redirect(url_for("account.otp_channel"))
            else:
                form.code.errors = ["Code incorrect : vérifiez l'heure de votre téléphone et "
                                    "saisissez le code affiché."]
    return render_template("account/totp.html", form=form, seed=seed, section="otp",
                           ask_password=not recently_confirmed())


@bp.get("/code/application/qr.svg")
def totp_qr() -> Response:
    seed = session.get(TOTP_PENDING)
    if not seed:
        return Response(status=404)
    buffer = io.BytesIO()
    segno.make(otp.provisioning_uri(seed, current_user.login), error="m").save(
        buffer, kind="svg", scale=5, border=2, xmldecl=False)
    return Response(buffer.getvalue(), mimetype="image/svg+xml")
