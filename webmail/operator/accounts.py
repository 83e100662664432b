"""The operator's account pages (issue #15 item 4): find a person's account by address, name
or RPPS/ADELI, then unlock it, suspend or reactivate it, reset its one-time-code channel or
close its personal mailbox — what ``mss account`` did alone.

The views parse, call one function of ``trust_space.accounts`` and audit the outcome (refusals
too). Suspending, resetting the code channel and closing a mailbox go through a confirmation
page saying what will happen; every change is a POST with its CSRF token. Access: the
operator pages' rule (``webmail.operator.require_operator``: an operator, logged in with TOTP).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from core.audit import AuditRecord
from core.db import utcnow
from core.errors import MssError, NotFound
from core.mailer import SIGNATURE, build_mail
from trust_space import accounts
from trust_space.models import Account, AccountKind, Mailbox, MailboxKind
from webmail.context import mss, operator_required, record
from webmail.forms import EmptyForm
from webmail.operator import require_operator
from webmail.operator.decision import clean_reason

log = logging.getLogger("mss.webmail")
bp = Blueprint("operator_accounts", __name__, url_prefix="/operateur/comptes")
MOTIF_MAX = 300
CHANNELS = {"email": "code par courriel", "sms": "code par SMS", "totp": "application (TOTP)"}
MAILBOX_STATES = {"pending_validation": "en attente de validation", "published": "publiée",
                  "suspended": "suspendue", "closed": "fermée"}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.before_request
@operator_required
def _require_operator() -> None:
    """Operators only, logged in with TOTP."""
    require_operator()


@dataclass(frozen=True)
class Action:
    """One thing an operator does to an account: its audit name, the confirmation page's
    words (``confirm`` None: no confirmation page, it is undone as easily), the result."""

    audit: str
    label: str
    done: str
    confirm: str | None = None


ACTIONS = {
    "debloquer": Action("account.unlock", "Débloquer", "débloqué"),
    "reactiver": Action("account.reactivate", "Réactiver", "réactivé"),
    "suspendre": Action(
        "account.suspend", "Suspendre le compte", "suspendu",
        "Plus aucune connexion (webmail, IMAP, SMTP, carte CPS) jusqu'à sa réactivation ; les "
        "sessions ouvertes dans le webmail sont fermées. La boîte reste publiée et continue de "
        "recevoir les messages."),
    "reinitialiser-code": Action(
        "account.otp_reset", "Réinitialiser le code de connexion", "réinitialisé",
        "Le code de connexion repart par courriel à l'adresse habituelle ; la clé de "
        "l'application d'authentification éventuelle est effacée. Le titulaire en est prévenu "
        "par courriel."),
}
CLOSE = Action("mailbox.close", "Fermer la boîte", "fermée",
               "Fermeture définitive : la boîte est retirée de l'annuaire, ne reçoit ni "
               "n'envoie plus de messages, et le compte est suspendu. Elle ne pourra pas être "
               "rouverte.")


@bp.get("")
def search() -> str:
    """Search form and the accounts found."""
    q = request.args.get("q", "").strip()[:100]
    with mss().db.transaction() as db:
        rows = [_row(a) for a in accounts.search_accounts(db, q)] if q else []
    return render_template("ops/accounts.html", q=q, rows=rows, tab="comptes")


def _account(db: Session, account_id: int) -> Account:
    """A person's account (applicative and service accounts are not managed here).

    Raises:
        NotFound: no such account.
    """
    account = db.get(Account, account_id)
    if account is None or account.kind is not AccountKind.PROFESSIONAL:
        raise NotFound("Compte inconnu.")
    return account


def _row(account: Account) -> dict[str, Any]:
    pro = account.professional
    locked = account.locked_until is not None and account.locked_until > utcnow()
    return {"id": account.id, "login": account.login, "operator": account.is_operator,
            "name": pro.display_name if pro else "", "profession": pro.profession if pro else "",
            "number": (pro.rpps or pro.adeli or "") if pro else "",
            "kind": ("RPPS" if pro.rpps else "ADELI") if pro else "",
            "active": account.state.value == "active", "locked": locked,
            "locked_until": account.locked_until if locked else None,
            "failures": (account.failed_attempts or 0) + (account.code_failures or 0),
            "channel": CHANNELS.get(account.otp_channel.value, account.otp_channel.value),
            "email": pro.usual_email if pro else "", "last_login": account.last_login_at}


@bp.get("/<int:account_id>")
def detail(account_id: int) -> str:
    """One account: state, lock, code channel, personal mailboxes, recent audit entries."""
    with mss().db.transaction() as db:
        account = _account(db, account_id)
        row, boxes = _row(account), _mailboxes(db, account)
        history = db.scalars(select(AuditRecord).where(AuditRecord.target == account.login)
                             .order_by(AuditRecord.id.desc()).limit(15)).all()
    return render_template("ops/account.html", a=row, boxes=boxes, history=history,
                           form=EmptyForm(), tab="comptes")


def _mailboxes(db: Session, account: Account) -> list[dict[str, Any]]:
    if account.professional_id is None:
        return []
    boxes = db.scalars(select(Mailbox).where(
        Mailbox.professional_id == account.professional_id, Mailbox.operator_id.is_(None),
        Mailbox.kind == MailboxKind.PERSONAL).order_by(Mailbox.id)).all()
    return [{"id": m.id, "address": m.address, "state": MAILBOX_STATES[m.state.value],
             "closed": m.state.value == "closed"} for m in boxes]


@bp.route("/<int:account_id>/<action>", methods=["GET", "POST"])
def act(account_id: int, action: str) -> Response:
    """Confirmation page (GET) and the action itself (POST)."""
    todo = ACTIONS.get(action)
    if todo is None:
        raise NotFound("Action inconnue.")
    if request.method == "GET":
        if todo.confirm is None:
            return redirect(url_for(".detail", account_id=account_id))
        return _confirm_page(account_id, todo, url_for(".act", account_id=account_id,
                                                       action=action))
    return _perform(account_id, todo, _DOERS[action])


@bp.route("/<int:account_id>/boites/<int:mailbox_id>/fermer", methods=["GET", "POST"])
def close(account_id: int, mailbox_id: int) -> Response:
    """Close one of the account's personal mailboxes, after a confirmation page."""
    here = url_for(".close", account_id=account_id, mailbox_id=mailbox_id)
    if request.method == "GET":
        return _confirm_page(account_id, CLOSE, here, mailbox_id)
    return _perform(account_id, CLOSE, lambda db, a: _close(db, a, mailbox_id),
                    mailbox_id=mailbox_id)


def _close(db: Session, account: Account, mailbox_id: int) -> str:
    return accounts.close_personal_mailbox(db, account, mailbox_id).address


def _confirm_page(account_id: int, todo: Action, action_url: str,
                  mailbox_id: int | None = None) -> Response:
    with mss().db.transaction() as db:
        account = _account(db, account_id)
        row = _row(account)
        box = next((b for b in _mailboxes(db, account) if b["id"] == mailbox_id), None)
        if mailbox_id is not None and (box is None or box["closed"]):
            raise NotFound("Boîte inconnue ou déjà fermée.")
    html = render_template("ops/account_confirm.html", a=row, todo=todo, box=box,
                           action_url=action_url, form=EmptyForm(), tab="comptes",
                           motif_max=MOTIF_MAX)
    return Response(html, mimetype="text/html")


def _perform(account_id: int, todo: Action, doer: Callable[[Session, Account], str | None],
             **details: Any) -> Response:
    """Run ``doer`` on the account in one transaction, audit it (refused or done), tell.
    ``doer`` returns "" when there was nothing to do (an account that was not locked)."""
    EmptyForm().validate_on_submit()  # CSRF is checked by CSRFProtect before the view
    motif = clean_reason(request.form.get("motif", ""))[:MOTIF_MAX]
    notify: tuple[str, str] | None = None
    with mss().db.transaction() as db:
        account = _account(db, account_id)
        login = account.login
        try:
            result = doer(db, account)
        except MssError as exc:
            record(db, todo.audit, exc.code, target=login, via="operateur", **details)
            flash(exc.message, "error")
            return redirect(url_for(".detail", account_id=account_id))
        record(db, todo.audit, "ok" if result != "" else "nothing", target=login,
               via="operateur", motif=motif, **details)
        if todo is ACTIONS["reinitialiser-code"] and account.professional is not None:
            notify = (account.professional.usual_email, login)
    if notify is not None and notify[0]:
        _tell_holder(*notify)
    what = f"La boîte {result}" if todo is CLOSE else f"Le compte {login}"
    flash(f"{what} : {todo.done}." if result != "" else f"Rien à faire pour {login}.",
          "success" if result != "" else "info")
    return redirect(url_for(".detail", account_id=account_id))


def _tell_holder(to: str, login: str) -> None:
    """Best effort: the change stands even if the notice cannot leave now."""
    subject, text = otp_reset_text(login)
    try:
        mss().mailer.send(to, build_mail(to=to, sender=mss().sender, subject=subject,
                                         text=text))
    except (MssError, OSError):
        log.warning("avis de réinitialisation du code non envoyé")


def _unlock(_db: Session, account: Account) -> str | None:
    return None if accounts.unlock(account) else ""


def _reset(_db: Session, account: Account) -> None:
    accounts.reset_otp_channel(account)


def _suspend(_db: Session, account: Account) -> None:
    accounts.suspend(account)


def _reactivate(db: Session, account: Account) -> None:
    accounts.reactivate(db, account)


_DOERS: dict[str, Callable[[Session, Account], str | None]] = {
    "debloquer": _unlock, "reactiver": _reactivate, "suspendre": _suspend,
    "reinitialiser-code": _reset}


def otp_reset_text(login: str) -> tuple[str, str]:
    """Subject and text telling the holder that the operator reset their code channel."""
    return ("Votre code de connexion a été réinitialisé",
            f"Bonjour,\n\nÀ votre demande, l'opérateur de votre messagerie sécurisée a "
            f"réinitialisé le moyen de recevoir le code de connexion du compte {login} : le "
            "code vous sera désormais envoyé à cette adresse. Vous pouvez choisir un autre "
            "moyen dans « Mon compte ». Si vous n'êtes pas à l'origine de cette demande, "
            "contactez votre opérateur sans attendre." + SIGNATURE)
