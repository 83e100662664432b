"""Desktop notifications of new mail (issue #17), the person's choice, kept server-side.

Two settings in Mon compte › Préférences, per account (``notify_preference``; no row: both
off): ``browser`` — when a message arrives, the browser shows a notification saying
"Nouveau message" and the mailbox, nothing more; ``details`` — the sender and the subject
too, only if the person asks for it with this second, explicit setting (a screen can be seen
by a patient or a colleague). The browser's own permission is asked by ``js/notify.js`` when
the person ticks the first box or presses "Activer les notifications du navigateur" — never
when a page loads. The notification is drawn in the browser from the live counts
(``webmail.mail.live``): the server sends no subject or sender for it; with ``details`` the
page reads them from the list it is allowed to show. Each change is audited
(``account.preferences``, as the other preferences).
"""

from __future__ import annotations

from typing import cast

from flask import flash, g, jsonify, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import Boolean, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.wrappers import Response

from core.db import Base
from webmail.context import mss, record
from webmail.mail import bp

_YES = {"oui": True, "non": False}


class NotifyPreference(Base):
    """See the module docstring."""

    __tablename__ = "notify_preference"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    browser: Mapped[bool] = mapped_column(Boolean, default=False)
    details: Mapped[bool] = mapped_column(Boolean, default=False)


def notify_choices() -> tuple[bool, bool]:
    """(browser, details) of the logged-in person, read once per request."""
    if "notify_choices" in g:
        return cast(tuple[bool, bool], g.notify_choices)
    found = (False, False)
    if current_user.is_authenticated:
        with mss().db.read() as session:
            row = session.get(NotifyPreference, current_user.id)
            if row is not None:
                found = (bool(row.browser), bool(row.browser and row.details))
    g.notify_choices = found
    return found


@bp.post("/notifications")
def save_notifications() -> Response:
    """Save ``navigateur`` and ``details`` (``oui``/``non``; an unticked box is not sent: it
    means ``non``). Details without notifications is refused with a French message."""
    browser_text = request.form.get("navigateur", "non")
    details_text = request.form.get("details", "non")
    browser, details = _YES.get(browser_text), _YES.get(details_text)
    if browser is None or details is None or (details and not browser):
        return _answer("Choix invalide : l’expéditeur et l’objet ne s’affichent que si les "
                       "notifications du navigateur sont activées.", "error", 400)
    with mss().db.transaction() as session:
        row = session.get(NotifyPreference, current_user.id)
        if row is None:
            row = NotifyPreference(account_id=current_user.id, browser=False, details=False)
            session.add(row)
        changed = [name for name, old, new in (("browser_notify", row.browser, browser),
                                               ("browser_notify_details", row.details, details))
                   if bool(old) != new]
        row.browser, row.details = browser, details
        if changed:
            record(session, "account.preferences", "ok", target=current_user.login,
                   changed=changed)
    g.pop("notify_choices", None)
    if not browser:
        text = "Notifications du navigateur désactivées."
    elif details:
        text = ("Notifications du navigateur activées, avec l’expéditeur et l’objet des "
                "messages.")
    else:
        text = "Notifications du navigateur activées (« Nouveau message » et la boîte, sans " \
               "expéditeur ni objet)."
    return _answer(text, "success", 200)


def _answer(text: str, category: str, status: int) -> Response:
    if request.accept_mimetypes.best == "application/json":
        answer = jsonify(message=text) if status == 200 else jsonify(error=text)
        answer.status_code = status
        return answer
    flash(text, category)
    return redirect(url_for("account.preferences") + "#notifications")
