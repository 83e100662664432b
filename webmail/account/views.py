"""Mon compte: overview, password, one-time-code channel (with TOTP enrolment), preferences
(notifications, directory, dématérialisation), application passwords (IMAP/SMTP) and active
sessions. Every change is audited, without the values that are secret (passwords, seeds,
codes)."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Flask, abort, flash, redirect, render_template, session, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional

from core.db import utcnow
from trust_space import app_passwords, directory
from trust_space.accounts import set_password, verify_password
from trust_space.models import (
    Account,
    AppPassword,
    Delegation,
    Mailbox,
    MailboxKind,
    OtpChannel,
    Professional,
)
from webmail.account.forms import PasswordChangeForm, PreferencesForm
from webmail.context import mss, record
from webmail.forms import EmptyForm
from webmail.mail.relay import notice_trouble
from webmail.sessions import ServerSession, active_sessions, revoke_all

bp = Blueprint("account", __name__, url_prefix="/compte")


def init_app(app: Flask) -> None:
    # Their routes: code channel and confirmation; « Rédaction » (undo delay, signatures).
    from webmail.account import destinations, writing  # noqa: F401

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
        mailbox = personal_mailbox(db, account)
        trouble = None
        if account.professional is not None and mailbox is not None \
                and mailbox.notify_usual_email:
            trouble = notice_trouble(db, account.professional.usual_email or "",
                                     utcnow() - timedelta(days=7))
        return render_template("account/overview.html", account=account,
                               pro=account.professional, mailbox=mailbox,
                               delegations=delegations, notice_trouble=trouble)


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
            answer = _save_preferences(db, account, mailbox, pro, form)
            if answer is not None:
                return answer
        return render_template("account/preferences.html", form=form, mailbox=mailbox,
                               pro=pro, section="preferences", card=_card_session())


def _save_preferences(db: Session, account: Account, mailbox: Mailbox, pro: Professional,
                      form: PreferencesForm) -> Response | None:
    """Check the usual address change first (issue #15 item 1), then save; None: the form is
    shown again with its errors and nothing is saved."""
    from webmail.account import destinations

    address = (form.usual_email.data or "").strip().lower()
    if address != pro.usual_email:
        if not address and account.otp_channel is OtpChannel.EMAIL:
            form.usual_email.errors = [
                "Vos codes de connexion sont envoyés à cette adresse : choisissez d'abord un "
                "autre moyen de les recevoir (Code de connexion), puis effacez-la."]
            return None
        if not destinations.password_confirmed(db, account, form.password.data,
                                               "account.usual_email"):
            form.password.errors = [destinations.WRONG_PASSWORD]
            return None
    changed = _apply_preferences(db, mailbox, pro, form, address)
    if changed:
        record(db, "account.preferences", "ok", target=mailbox.address, changed=changed)
    if address and address != pro.usual_email:  # used once the code sent to it is typed
        error = destinations.start_change(db, account, OtpChannel.EMAIL, address, email=address)
        if error:
            form.usual_email.errors = [error]
            return None
        flash("Vos autres préférences sont enregistrées. Saisissez le code envoyé à votre "
              "nouvelle adresse pour qu'elle remplace l'ancienne.", "info")
        return redirect(url_for("account.confirm_change"))
    flash("Vos préférences sont enregistrées.", "success")
    return redirect(url_for("account.preferences"))


def _apply_preferences(db: Session, mailbox: Mailbox, pro: Professional,
                       form: PreferencesForm, address: str) -> list[str]:
    """Apply the form but a new usual address (confirmed by a code first; clearing it is
    applied); the names of what changed (for the audit record). The liste rouge goes through
    the directory (the national directory is told)."""
    wanted: dict[tuple[object, str], object] = {
        (mailbox, "notify_usual_email"): bool(form.notify.data),
        (mailbox, "mobile_published"): bool(form.mobile_published.data),
        (mailbox, "dematerialisation"): bool(form.dematerialisation.data)}
    if not address:
        wanted[(pro, "usual_email")] = ""
    changed = ["liste_rouge"] if directory.set_liste_rouge(
        db, mailbox, bool(form.liste_rouge.data)) else []
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
        from webmail.account.destinations import password_confirmed

        if not password_confirmed(db, account, form.password.data,
                                  "account.app_password.create"):
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
