"""« Message en cours d'envoi… Annuler »: the webmail side of ``outbox``.

« Envoyer » holds the message (``send``) and lands in the mailbox's inbox, where a banner
(``mail/_held.html``, in the mail pages' layout) counts down and offers « Annuler »: a plain
form, so it works without JavaScript; without it the inbox reloads itself once the delay is
over (a ``<meta http-equiv=refresh>`` inside ``<noscript>``: CSP does not govern it), and
the banner then says how it went. With JavaScript (``static/js/undo.js``) the banner asks
``GET /courrier/envoi/<id>`` until the message has left.

« Annuler » puts the held message back into Brouillons and opens it in the compose form —
recipients, text, attachments, protection, sender, the message replied to — before the row is
marked cancelled; if the message left meanwhile, the copy is removed and the person told.
A delay of 0 sends during the request, as before: a refusal is shown on the form.
"""

from __future__ import annotations

import re
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import cast

from flask import (
    Flask,
    abort,
    after_this_request,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    request,
    url_for,
)
from flask_login import current_user
from werkzeug.wrappers import Response

from core.db import utcnow
from mailstore.imap import MailboxSession
from webmail.context import mss
from webmail.mail import bp, imap_uid
from webmail.mail import outbox as ob
from webmail.mail.access import INBOX, Box, Right, authorise, imap, pool, valid_folder
from webmail.mail.drafting import ComposeForm, Outgoing, build
from webmail.mail.folders import DRAFTS, SENT
from webmail.mail.submit import Submitter
from webmail.mail.writing import undo_seconds
from webmail.models import HeldMessage

_COMPOSE_ID = re.compile(r"^[A-Za-z0-9_-]{16,40}$")


def new_compose_id() -> str:
    """The id of one compose page (its held message, its autosaved draft)."""
    return secrets.token_urlsafe(18)


def compose_id(form: ComposeForm) -> str:
    """The page's id as posted, or a new one (an old page, or a client without it: then no
    double-click protection, no draft replaced by its page)."""
    found = form.compose_id.data or ""
    if not _COMPOSE_ID.match(found):
        found = form.compose_id.data = new_compose_id()
    return found


def outbox_of(app: Flask) -> ob.Outbox:
    """The application's outbox (its thread is started by ``webmail.service``)."""
    found = app.extensions.get("mss.outbox")
    if found is None:
        real = cast(Flask, getattr(app, "_get_current_object", lambda: app)())  # not a proxy

        def opener(login: str) -> AbstractContextManager[MailboxSession]:
            with real.app_context():
                return pool().session(login)

        settings = app.extensions["mss"].settings
        found = app.extensions["mss.outbox"] = ob.Outbox(
            app.extensions["mss"].db, lambda: Submitter.for_settings(settings), opener)
    return cast(ob.Outbox, found)


def send(box: Box, sender: Box, form: ComposeForm, out: Outgoing) -> Response | str:
    """Hold the message (or, with a delay of 0, submit it now); the answer to the POST, or
    the French reason it was refused (shown on the form)."""
    raw, message_id = build(out, domain=mss().settings.domain)
    with mss().db.read() as db:
        delay = undo_seconds(db, current_user.id)
    page = compose_id(form)
    reply_uid, reply_folder = _replied(form)
    draft_uid = imap_uid(form.draft_uid.data) if box.can(Right.DELETE) else None
    item = ob.Hold(
        current_user.id, page, current_user.login, box.id, sender.address,
        out.recipients, message_id, raw,
        {"size": len(raw), "attachments": len(out.attachments), "sign": out.sign,
         "encrypt": out.encrypt, "format": "html" if out.html else "text"},
        box.imap_name(DRAFTS), draft_uid,
        box.imap_name(reply_folder) if reply_uid is not None else "", reply_uid,
        sender.imap_name(SENT))
    outbox = outbox_of(current_app)
    inbox = redirect(url_for("mail.folder", box_id=box.id, dossier=INBOX))
    if delay > 0:
        ob.hold(mss().db, item, delay)
        return inbox
    held_id, created = ob.hold(mss().db, item, 0, owner=outbox.owner)
    if created:
        result = outbox.submit(held_id, retry=False)
        if result.state == ob.FAILED:
            return result.message
        if result.state == ob.SENT:
            ob.mark_notified(mss().db, [held_id])
            flash(result.message, "success")
    return inbox


def _replied(form: ComposeForm) -> tuple[int | None, str]:
    """The message this one answers (to mark \\Answered once sent) and its folder."""
    uid = imap_uid(form.reply_uid.data)
    folder = form.reply_folder.data or form.source_folder.data or ""
    if uid is None or not valid_folder(folder) or folder == DRAFTS:
        return None, ""
    return uid, folder


@dataclass
class Banner:
    """What the mail pages say about the person's held messages."""

    pending: list[HeldMessage] = field(default_factory=list)
    finished: list[HeldMessage] = field(default_factory=list)

    def remaining(self, row: HeldMessage) -> int:
        return max(0, int((row.due_at - utcnow()).total_seconds() + 0.999))

    @property
    def refresh(self) -> int:
        """Seconds after which a page without JavaScript reloads (0: it need not)."""
        if not self.pending or request.endpoint != "mail.folder":
            return 0  # never reload a page someone may be typing in
        return min(self.remaining(r) for r in self.pending) + 2


@bp.app_template_global("held_banner")
def banner() -> Banner:
    """This request's banner (a template global, asked from the head and the body); the
    outcomes shown are marked seen once the response is made (outside the view's own
    transaction)."""
    if "held_banner" in g:
        return cast(Banner, g.held_banner)
    found = Banner()
    if current_user.is_authenticated:
        rows = ob.pending_for(mss().db, current_user.id)
        found.pending = [r for r in rows if r.state in (ob.HELD, ob.SENDING)]
        found.finished = [r for r in rows if r.state in (ob.SENT, ob.FAILED)]
        if found.finished:
            ids = [r.id for r in found.finished]

            @after_this_request
            def _seen(response: Response) -> Response:
                ob.mark_notified(mss().db, ids)
                return response
    g.held_banner = found
    return found


@bp.post("/envoi/<int:held_id>/annuler")
def cancel(held_id: int) -> Response:
    """« Annuler »: the message back into the compose form (see the module docstring)."""
    db = mss().db
    row = ob.take_back(db, held_id, current_user.id)
    if row is None:
        found = ob.status(db, held_id, current_user.id)
        if found is None:
            abort(404)
        flash("Cet envoi est déjà annulé." if found.state == ob.CANCELLED else
              "Trop tard : le message est déjà parti.", "warning")
        return redirect(url_for("mail.folder", box_id=found.box_id, dossier=INBOX))
    box = authorise(row.box_id, Right.DRAFT)
    with imap() as session:
        uid = session.append(row.drafts_folder, row.raw, ["\\Draft", "\\Seen"])
        if not ob.cancel(db, held_id, current_user.id, uid):
            if uid is not None and box.can(Right.DELETE):
                session.expunge(row.drafts_folder, [uid])
            flash("Trop tard : le message est déjà parti.", "warning")
            return redirect(url_for("mail.folder", box_id=box.id, dossier=INBOX))
        if row.draft_uid is not None and row.draft_uid != uid and box.can(Right.DELETE):
            session.expunge(row.drafts_folder, [row.draft_uid])
    flash("Envoi annulé : votre message est de retour dans le formulaire, rien n’est parti.",
          "info")
    if uid is None:
        return redirect(url_for("mail.folder", box_id=box.id, dossier=DRAFTS))
    return redirect(url_for("mail.compose", box_id=box.id, brouillon=uid, dossier=DRAFTS,
                            annule=held_id))


@bp.get("/envoi/<int:held_id>")
def held_status(held_id: int) -> Response:
    """JSON for ``js/undo.js``: ``{state, remaining, message, draft_url}``."""
    row = ob.status(mss().db, held_id, current_user.id)
    if row is None:
        abort(404)
    answer: dict[str, object] = {"state": row.state, "message": row.outcome,
                                 "remaining": max(0.0, (row.due_at - utcnow()).total_seconds()),
                                 "retry": row.state == ob.HELD and row.attempts > 0}
    if row.state == ob.FAILED and row.draft_uid is not None:
        answer["draft_url"] = url_for("mail.compose", box_id=row.box_id, brouillon=row.draft_uid,
                                      dossier=DRAFTS)
    if row.state in (ob.SENT, ob.FAILED) and not row.notified:
        ob.mark_notified(mss().db, [row.id])
    return jsonify(answer)


def restore(form: ComposeForm, box: Box, held_id: int) -> None:
    """After « Annuler »: what the draft does not carry (the message replied to)."""
    row = ob.status(mss().db, held_id, current_user.id)
    if row is None or row.state != ob.CANCELLED or row.box_id != box.id:
        return
    if row.reply_uid is not None and row.reply_folder:
        folder = box.local_name(row.reply_folder)
        if folder is not None:
            form.reply_uid.data, form.reply_folder.data = str(row.reply_uid), folder

