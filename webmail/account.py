"""Mon compte: overview, password, one-time-code channel (with TOTP enrolment), preferences
(notifications, directory, dématérialisation), application passwords (IMAP/SMTP) and active
sessions. Every change is audited, without the values that are secret (passwords, seeds,
codes)."""

from __future__ import annotations

import io

import segno
from flask import Blueprint, Flask, abort, flash, redirect, render_template, session, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional

from core.db import utcnow
from trust_space import app_passwords
from trust_space.accounts import _record_failure, set_password, verify_password
from trust_space.models import Account, AppPassword, Delegation, Mailbox, MailboxKind, OtpChannel
from webmail import otp
from webmail.context import mss, record
from webmail.forms import (
    EmptyForm,
    OtpChannelForm,
    PasswordChangeForm,
    PreferencesForm,
    TotpConfirmForm,
)
from webmail.sessions import ServerSession, active_sessions, revoke_all

bp = Blueprint("account", __name__, url_prefix="/compte")
TOTP_PENDING = "totp_enrolment"


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.before_request
@login_required
def _require_login() -> None:
    """Every page of this blueprint needs a logged-in user."""


def _account(db: Session) -> Account:
    account = db.get(Account, current_user.id)
    assert account is not None  # the user loader only returns existing accounts
    return account


def personal_mailbox(db: Session, account: Account) -> Mailbox | None:
    """The account's own personal mailbox (None for an operator's account)."""
    if account.professional_id is None:
        return None
    return db.scalars(select(Mailbox).where(
        Mailbox.professional_id == account.professional_id, Mailbox.kind == MailboxKind.PERSONAL,
        Mailbox.operator_id.is_(None)).order_by(Mailbox.id)).first()


@bp.get("")
def overview() -> str:
    with mss().db.transaction() as db:
        account = _account(db)
        delegations = db.scalars(select(Delegation).where(
            Delegation.professional_id == account.professional_id)).all() \
            if account.professional_id else []
        return render_template("account/overview.html", account=account,
                               pro=account.professional, mailbox=personal_mailbox(db, account),
                               delegations=delegations)


@bp.route("/mot-de-passe", methods=["GET", "POST"])
def password() -> Response | str:
    form = PasswordChangeForm()
    if form.validate_on_submit():
        with mss().db.transaction() as db:
            account = _account(db)
            if account.password_hash and verify_password(account.password_hash,
                                                         form.current.data):
                set_password(account, form.new.data)
                record(db, "account.password", "ok", target=account.login)
                flash("Votre mot de passe a été modifié.", "success")
                return redirect(url_for("account.password"))
            record(db, "account.password", "wrong_current", target=account.login)
        form.current.errors = ["Le mot de passe actuel est incorrect."]
    return render_template("account/password.html", form=form, section="password")


@bp.route("/code", methods=["GET", "POST"])
def otp_channel() -> Response | str:
    with mss().db.transaction() as db:
        account = _account(db)
        pro = account.professional
        form = OtpChannelForm(data={"channel": account.otp_channel.value,
                                    "mobile": pro.mobile if pro else ""})
        if form.validate_on_submit():
            error = _apply_channel(db, account, form)
            if error is None:
                flash("Votre moyen de recevoir le code de connexion est enregistré.", "success")
                if form.channel.data == "totp" and not account.totp_secret:
                    return redirect(url_for("account.totp"))
                return redirect(url_for("account.otp_channel"))
            form.channel.errors = [error]
        return render_template("account/otp.html", form=form, account=account, section="otp")


def _apply_channel(db: Session, account: Account, form: OtpChannelForm) -> str | None:
    """Save channel and mobile; the French error, or None."""
    channel, pro = OtpChannel(form.channel.data), account.professional
    mobile = (form.mobile.data or "").strip()
    if pro is not None and mobile != pro.mobile:
        pro.mobile = mobile
        record(db, "account.mobile", "ok", target=account.login)
    if channel is OtpChannel.SMS and not mobile:
        return "Indiquez votre numéro de mobile pour recevoir le code par SMS."
    if channel is OtpChannel.EMAIL and (pro is None or not pro.usual_email):
        return "Indiquez d'abord votre adresse habituelle dans vos préférences."
    if channel is OtpChannel.TOTP and not account.totp_secret:
        return None  # chosen once the app is enrolled (account.totp)
    if channel is not account.otp_channel:
        account.otp_channel = channel
        record(db, "account.otp_channel", "ok", target=account.login, channel=channel.value)
    return None


@bp.route("/code/application", methods=["GET", "POST"])
def totp() -> Response | str:
    seed = session.get(TOTP_PENDING) or otp.new_totp_seed()
    session[TOTP_PENDING] = seed
    form = TotpConfirmForm()
    if form.validate_on_submit():
        with mss().db.transaction() as db:
            account = _account(db)
            if otp.accept_totp(db, account, seed, form.code.data, utcnow()):
                account.totp_secret = otp.seal_seed(seed, mss().settings.secret())
                account.otp_channel = OtpChannel.TOTP
                record(db, "account.totp_enrol", "ok", target=account.login)
                session.pop(TOTP_PENDING, None)
                flash("Application d'authentification activée : elle vous donnera désormais "
                      "votre code de connexion.", "success")
                return redirect(url_for("account.otp_channel"))
        form.code.errors = ["Code incorrect : vérifiez l'heure de votre téléphone et "
                            "saisissez le code affiché."]
    return render_template("account/totp.html", form=form, seed=seed, section="otp")


@bp.get("/code/application/qr.svg")
def totp_qr() -> Response:
    seed = session.get(TOTP_PENDING)
    if not seed:
        return Response(status=404)
    buffer = io.BytesIO()
    segno.make(otp.provisioning_uri(seed, current_user.login), error="m").save(
        buffer, kind="svg", scale=5, border=2, xmldecl=False)
    return Response(buffer.getvalue(), mimetype="image/svg+xml")


@bp.route("/preferences", methods=["GET", "POST"])
def preferences() -> Response | str:
    with mss().db.transaction() as db:
        account = _account(db)
        mailbox, pro = personal_mailbox(db, account), account.professional
        if mailbox is None or pro is None:
            flash("Ce compte n'a pas de boîte aux lettres personnelle.", "info")
            return redirect(url_for("account.overview"))
        form = PreferencesForm(data={
            "notify": mailbox.notify_usual_email, "usual_email": pro.usual_email,
            "mobile_published": mailbox.mobile_published, "liste_rouge": mailbox.liste_rouge,
            "dematerialisation": mailbox.dematerialisation})
        if form.validate_on_submit():
            changed = _apply_preferences(mailbox, pro, form)
            if changed:
                record(db, "account.preferences", "ok", target=mailbox.address, changed=changed)
            flash("Vos préférences sont enregistrées.", "success")
            return redirect(url_for("account.preferences"))
        return render_template("account/preferences.html", form=form, mailbox=mailbox,
                               pro=pro, section="preferences")


def _apply_preferences(mailbox: Mailbox, pro: object, form: PreferencesForm) -> list[str]:
    """Apply the form; the names of what changed (for the audit record)."""
    wanted = {(mailbox, "notify_usual_email"): bool(form.notify.data),
              (pro, "usual_email"): (form.usual_email.data or "").strip().lower(),
              (mailbox, "mobile_published"): bool(form.mobile_published.data),
              (mailbox, "liste_rouge"): bool(form.liste_rouge.data),
              (mailbox, "dematerialisation"): bool(form.dematerialisation.data)}
    changed = []
    for (target, name), value in wanted.items():
        if getattr(target, name) != value:
            setattr(target, name, value)
            changed.append(name)
    return changed


@bp.get("/sessions")
def sessions() -> str:
    assert isinstance(session, ServerSession)
    with mss().db.transaction() as db:
        rows = active_sessions(db, current_user.id, mss().timeout)
        return render_template("account/sessions.html", rows=rows, current=session.row_id,
                               form=EmptyForm(), section="sessions")


@bp.post("/sessions/deconnexion")
def logout_everywhere() -> Response:
    assert isinstance(session, ServerSession)
    keep_current = EmptyForm().validate_on_submit() and _keep_current()
    with mss().db.transaction() as db:
        count = revoke_all(db, current_user.id, keep=session.row_id if keep_current else None)
        record(db, "account.logout_everywhere", "ok", target=current_user.login,
               sessions=count, kept_current=keep_current)
    if keep_current:
        flash(f"{count} autre(s) session(s) fermée(s).", "success")
        return redirect(url_for("account.sessions"))
    session.regenerate()
    flash("Toutes vos sessions ont été fermées, y compris celle-ci.", "success")
    return redirect(url_for("auth.login"))


def _keep_current() -> bool:
    from flask import request

    return request.form.get("scope") == "others"


# ---------------------------------------------------------------- application passwords
class AppPasswordForm(FlaskForm):
    """A new application password: the device's name, and the web password again (unless
    this session was opened with the CPS card) — creating an IMAP/SMTP credential is a
    sensitive change, so a stolen open session is not enough."""

    name = StringField("Nom de l'appareil ou du logiciel", validators=[
        DataRequired(message="Ce champ est obligatoire."),
        Length(max=app_passwords.NAME_MAX, message=f"{app_passwords.NAME_MAX} caractères au "
                                                    "plus.")],
        description="Par exemple « Thunderbird bureau » ou « Logiciel du cabinet ».")
    password = PasswordField("Votre mot de passe (confirmation)",
                             validators=[Optional(), Length(max=256)])


def _card_session() -> bool:
    return session.get("login_method") == "card"


def _app_passwords_page(db: Session, account: Account, form: AppPasswordForm, *,
                        created: tuple[AppPassword, str] | None = None,
                        status: int = 200) -> Response:
    s = mss().settings
    html = render_template(
        "account/app_passwords.html", section="app_passwords", form=form, account=account,
        rows=app_passwords.active(db, account), created=created, card=_card_session(),
        allowed=app_passwords.may_have_app_passwords(account), host=s.hostname,
        ports={"imaps": s.imaps_port, "imap": s.imap_port, "smtps": s.submissions_port,
               "smtp": s.submission_port}, revoke_form=EmptyForm())
    return Response(html, status=status, mimetype="text/html")


@bp.get("/mots-de-passe-application")
def app_password_list() -> Response:
    with mss().db.transaction() as db:
        return _app_passwords_page(db, _account(db), AppPasswordForm(formdata=None))


@bp.post("/mots-de-passe-application")
def app_password_create() -> Response:
    form = AppPasswordForm()
    with mss().db.transaction() as db:
        account = _account(db)
        if not form.validate_on_submit():
            return _app_passwords_page(db, account, form, status=400)
        if not _card_session() and not (account.password_hash and verify_password(
                account.password_hash, form.password.data or "")):
            s = mss().settings  # a wrong password counts, like at the log-in page
            _record_failure(account, utcnow(), s.login_max_failures, s.login_lock_minutes)
            record(db, "account.app_password.create", "wrong_password", target=account.login)
            form.password.errors = ["Mot de passe incorrect."]
            return _app_passwords_page(db, account, form, status=401)
        try:
            row, secret = app_passwords.create(db, account, form.name.data or "")
        except app_passwords.AppPasswordError as exc:
            form.name.errors = [exc.message]
            return _app_passwords_page(db, account, form, status=400)
        record(db, "account.app_password.create", "ok", target=account.login, name=row.name,
               prefix=row.prefix)
        # Shown in this answer only (no redirect: it must not travel through the session).
        return _app_passwords_page(db, account, AppPasswordForm(formdata=None),
                                   created=(row, secret))


def _own_row(db: Session, account: Account, prefix: str) -> AppPassword:
    """The account's active application password with this prefix, else 404 (another
    account's prefix is "not found" too)."""
    try:
        return app_passwords.find(db, account, prefix)
    except app_passwords.AppPasswordError:
        abort(404)


@bp.get("/mots-de-passe-application/<prefix>/revoquer")
def app_password_confirm(prefix: str) -> str:
    with mss().db.transaction() as db:
        row = _own_row(db, _account(db), prefix)
        return render_template("account/app_password_revoke.html", row=row, form=EmptyForm(),
                               section="app_passwords")


@bp.post("/mots-de-passe-application/<prefix>/revoquer")
def app_password_revoke(prefix: str) -> Response:
    with mss().db.transaction() as db:
        account = _account(db)
        row = _own_row(db, account, prefix)
        if not EmptyForm().validate_on_submit():
            abort(400)
        app_passwords.revoke(db, account, row.prefix)
        record(db, "account.app_password.revoke", "ok", target=account.login, name=row.name,
               prefix=row.prefix)
        flash(f"Le mot de passe d'application « {row.name} » est révoqué : il ne permet plus "
              "de se connecter.", "success")
    return redirect(url_for("account.app_password_list"))
