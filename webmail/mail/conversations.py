"""Reading by conversation (issue #17): the list grouped by thread and a conversation read as
one page.

The list shows one line per conversation (``threads``) when the URL says ``vue=conversations``
or, without ``vue``, when the person chose it (``ReadingPreference``, the list's « Messages /
Conversations » switch, a POST that is saved and audited). ``vue=messages`` shows the flat
list whatever the choice, so a link keeps meaning what it meant.

A conversation's page shows its messages oldest first, each as the read view shows one
(security badge, fields, body, attachments, actions); the unread ones and the latest are open,
the others folded (``<details>``). Opening it marks its messages read (they are all shown) and
audits one ``mail.read`` with every UID shown.
"""

from __future__ import annotations

from dataclasses import replace

from flask import flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from mailstore.errors import MailboxNotFound
from mailstore.imap import Message
from webmail.context import mss, record
from webmail.forms import EmptyForm
from webmail.mail import PER_PAGE, bp, listing, threads
from webmail.mail.access import Box, Right, accessible_boxes, audit, imap, mailbox_route
from webmail.mail.badge import voucher
from webmail.mail.folders import DRAFTS, SENT, TRASH, box_folders, directory_names, label
from webmail.mail.read import shown
from webmail.models import ReadingPreference

VIEWS = ("messages", "conversations")


def chosen() -> bool:
    """Whether the logged-in person chose to see their lists by conversation (once per
    request)."""
    if "conversations_chosen" not in g:
        with mss().db.read() as session:
            row = session.get(ReadingPreference, current_user.id)
            g.conversations_chosen = bool(row and row.conversations)
    return bool(g.conversations_chosen)


@bp.app_template_global("by_conversation")
def wanted() -> bool:
    """Whether this list is shown by conversation: ``vue`` when given, else the choice."""
    asked = request.args.get("vue")
    if asked in VIEWS:
        return asked == "conversations"
    return current_user.is_authenticated and chosen()


def _page_number() -> int:
    raw = request.args.get("page", "1")
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 100_000 else 1


def folder_page(box: Box, folder: str) -> str:
    """The list of ``folder`` by conversation (called by ``folders.folder``)."""
    with imap() as session:
        folders = box_folders(session, box)
        if folder not in {f.name for f in folders}:
            raise MailboxNotFound("Dossier introuvable")
        found = threads.page(session, box.imap_name(folder), _page_number(), PER_PAGE,
                             voucher(), box.address)
    named = listing.with_directory_names([c.latest for c in found.conversations],
                                         directory_names)
    lines = [replace(c, latest=row) for c, row in zip(found.conversations, named, strict=True)]
    return render_template("mail/conversations.html", box=box, boxes=accessible_boxes(),
                           folders=folders, folder=folder, folder_label=label(folder),
                           found=found, lines=lines, form=EmptyForm(),
                           sent=folder in (SENT, DRAFTS), specials=(SENT, DRAFTS, TRASH))


@bp.get("/<int:box_id>/conversation/<uid:uid>")
@mailbox_route(Right.READ)
def conversation(box: Box, folder: str, uid: int) -> str:
    """One conversation as one page (module docstring)."""
    name = box.imap_name(folder)
    with imap() as session:
        uids = threads.conversation_of(session, name, uid)
        shown_uids = list(uids[-threads.MAX_SHOWN:])
        data = session._call(session.client.fetch, shown_uids, [b"BODY.PEEK[]", b"FLAGS"])
        found = [Message(u, data[u][b"BODY[]"], _flags(data[u].get(b"FLAGS", ())))
                 for u in shown_uids if u in data and b"BODY[]" in data[u]]
        unseen = [m.uid for m in found if "\\Seen" not in m.flags]
        if unseen and box.can(Right.FLAG):
            session.set_flags(name, unseen, ["\\Seen"])
        folders = box_folders(session, box)
    if not found:
        raise MailboxNotFound(f"Message introuvable (UID {uid})")
    items = [shown(box, folder, m) for m in found]
    audit("mail.read", box, folder=folder, uid=uid, uids=[m.uid for m in found],
          view="conversation")
    return render_template(
        "mail/conversation.html", box=box, boxes=accessible_boxes(), folders=folders,
        folder=folder, folder_label=label(folder), items=items, uid=uid,
        older=len(uids) - len(found), show_images=request.args.get("images") == "1",
        form=EmptyForm(), specials=(SENT, DRAFTS, TRASH))


def _flags(raw: object) -> tuple[str, ...]:
    values = raw if isinstance(raw, (tuple, list)) else ()
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


@bp.post("/<int:box_id>/vue")
@mailbox_route(Right.READ)
def choose_view(box: Box, folder: str) -> Response:
    """Save the list's view (``vue``: ``messages`` or ``conversations``) as the person's
    choice, then back to the folder."""
    asked = request.form.get("vue", "")
    if asked not in VIEWS:
        flash("Choix d’affichage invalide : « messages » ou « conversations ».", "error")
        return redirect(url_for("mail.folder", box_id=box.id, dossier=folder))
    grouped = asked == "conversations"
    with mss().db.transaction() as session:
        row = session.get(ReadingPreference, current_user.id)
        if row is None:
            row = ReadingPreference(account_id=current_user.id, conversations=False)
            session.add(row)
        if row.conversations != grouped:
            row.conversations = grouped
            record(session, "mail.preferences", "ok", target=current_user.login,
                   conversations=grouped)
    g.pop("conversations_chosen", None)
    flash("Liste affichée par conversation." if grouped else "Liste affichée message par "
          "message.", "success")
    return redirect(url_for("mail.folder", box_id=box.id, dossier=folder))
