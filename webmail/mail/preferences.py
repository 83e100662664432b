"""A person's choices for their message lists: how many messages a page shows (25, 50 or 100)
and whether the keyboard shortcuts are on (Gmail and Roundcube let one turn them off: a
screen-reader user may need the letters for their own reader). Kept per account in
``list_preference``; no row means the defaults. Changed from the list's "Messages par page",
the shortcuts' help and Mon compte › Préférences; each change is audited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from flask import flash, g, jsonify, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import Boolean, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.wrappers import Response

from core.db import Base
from webmail.context import mss, record
from webmail.mail import PER_PAGE, bp
from webmail.mail.listview import PAGE_SIZES


class ListPreference(Base):
    """See the module docstring."""

    __tablename__ = "list_preference"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    page_size: Mapped[int] = mapped_column(Integer, default=PER_PAGE)
    shortcuts: Mapped[bool] = mapped_column(Boolean, default=True)


@dataclass(frozen=True)
class Choices:
    page_size: int = PER_PAGE
    shortcuts: bool = True


def choices() -> Choices:
    """The logged-in person's choices (read once per request; defaults when none)."""
    if "list_choices" in g:
        return cast(Choices, g.list_choices)
    found = Choices()
    if current_user.is_authenticated:
        with mss().db.read() as session:
            row = session.get(ListPreference, current_user.id)
            if row is not None:
                size = row.page_size if row.page_size in PAGE_SIZES else PER_PAGE
                found = Choices(size, bool(row.shortcuts))
    g.list_choices = found
    return found


def _back() -> Response:
    target = request.form.get("retour", "")
    if target.startswith(("/courrier/", "/compte/")) and "//" not in target \
            and "\\" not in target and "\r" not in target and "\n" not in target:
        return redirect(target)
    return redirect(url_for("mail.index"))


@bp.post("/preferences")
def save_preferences() -> Response:
    """Save ``par_page`` (25/50/100) and/or ``raccourcis`` (``oui``/``non``); a field not
    sent keeps its value. Anything else is refused with a French message."""
    size_text = request.form.get("par_page")
    shortcuts_text = request.form.get("raccourcis")
    size = int(size_text) if size_text in {str(n) for n in PAGE_SIZES} else None
    shortcuts = {"oui": True, "non": False}.get(shortcuts_text or "")
    wants_json = request.accept_mimetypes.best == "application/json"
    if (size_text is not None and size is None) or (shortcuts_text is not None
                                                    and shortcuts is None) \
            or (size is None and shortcuts is None):
        text = "Choix invalide : 25, 50 ou 100 messages par page ; raccourcis oui ou non."
        if wants_json:
            return cast(Response, (jsonify(error=text), 400))
        flash(text, "error")
        return _back()
    with mss().db.transaction() as session:
        row = session.get(ListPreference, current_user.id)
        if row is None:
            row = ListPreference(account_id=current_user.id, page_size=PER_PAGE,
                                 shortcuts=True)
            session.add(row)
        changed: dict[str, Any] = {}
        if size is not None and row.page_size != size:
            row.page_size = changed["page_size"] = size
        if shortcuts is not None and row.shortcuts != shortcuts:
            row.shortcuts = changed["shortcuts"] = shortcuts
        if changed:
            record(session, "mail.preferences", "ok", target=current_user.login, **changed)
    g.pop("list_choices", None)
    text = _said(size, shortcuts)
    if wants_json:
        return jsonify(message=text)
    flash(text, "success")
    return _back()


def _said(size: int | None, shortcuts: bool | None) -> str:
    parts = []
    if size is not None:
        parts.append(f"{size} messages par page")
    if shortcuts is not None:
        parts.append("raccourcis clavier " + ("activés" if shortcuts else "désactivés"))
    text = ", ".join(parts)
    return text[0].upper() + text[1:] + "."
