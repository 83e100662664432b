"""Reading by conversation (issue #17): the list grouped by thread and a conversation read as
one page.

The list shows one line per conversation (``threads``) when the URL says ``vue=conversations``
or, without ``vue``, when the person chose it (``ReadingPreference``, the list's « Messages /
Conversations » switch, a POST that is saved and audited). ``vue=messages`` shows the flat
list whatever the choice, so a link keeps meaning what it meant.

A conversation's page shows its messages oldest first, each as the read view shows one
(security badge, fields, body, attachments, actions); the unread ones and the latest are open,
the others folded (``<details>``). The person's own messages of the conversation, kept in
« Messages envoyés », are shown among them (found by their Message-ID and References, as
Gmail and Thunderbird's conversation view do). Opening it marks its messages read (they are
all shown) and audits one ``mail.read`` with every UID shown.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from mailformat import headers
from mailstore import listing
from mailstore.errors import MailboxNotFound
from mailstore.imap import MailboxSession, Message
from webmail.context import mss, record
from webmail.forms import EmptyForm
from webmail.mail import PER_PAGE, bp, threads
from webmail.mail.access import Box, Right, accessible_boxes, audit, imap, mailbox_route
from webmail.mail.badge import voucher
from webmail.mail.folders import DRAFTS, SENT, TRASH, box_folders, directory_names, label
from webmail.mail.read import Shown, shown
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
                             voucher())
    named = listing.with_directory_names([c.latest for c in found.conversations],
                                         directory_names)
    known = directory_names({a for c in found.conversations for _, a in c.participants if a})
    lines = [(replace(c, latest=row), [_who(name, address, box, known)
                                       for name, address in c.participants])
             for c, row in zip(found.conversations, named, strict=True)]
    return render_template("mail/conversations.html", box=box, boxes=accessible_boxes(),
                           folders=folders, folder=folder, folder_label=label(folder),
                           found=found, lines=lines, form=EmptyForm(),
                           sent=folder in (SENT, DRAFTS), specials=(SENT, DRAFTS, TRASH))


def _who(name: str, address: str, box: Box, known: dict[str, str]) -> str:
    """A participant as the list names them: « moi » for the mailbox itself, else the
    directory's name, the name the message gives (unless it holds an address), the address."""
    if address == box.address.lower():
        return "moi"
    return known.get(address) or (name if name and "@" not in name else "") or address


@bp.get("/<int:box_id>/conversation/<uid:uid>")
@mailbox_route(Right.READ)
def conversation(box: Box, folder: str, uid: int) -> str:
    """One conversation as one page (module docstring)."""
    name = box.imap_name(folder)
    with imap() as session:
        uids = threads.conversation_of(session, name, uid)
        found = _fetch(session, name, list(uids[-threads.MAX_SHOWN:]))
        unseen = [m.uid for m in found if "\\Seen" not in m.flags]
        if unseen and box.can(Right.FLAG):
            session.set_flags(name, unseen, ["\\Seen"])
        folders = box_folders(session, box)
        sent = _sent_replies(session, box, folder, found, {f.name for f in folders})
    if not found:
        raise MailboxNotFound(f"Message introuvable (UID {uid})")
    items = sorted([shown(box, folder, m) for m in found] + [shown(box, SENT, m) for m in sent],
                   key=_when)[-threads.MAX_SHOWN:]
    replies: dict[str, Any] = {"sent_uids": [m.uid for m in sent]} if sent else {}
    audit("mail.read", box, folder=folder, uid=uid, uids=[m.uid for m in found],
          view="conversation", **replies)
    return render_template(
        "mail/conversation.html", box=box, boxes=accessible_boxes(), folders=folders,
        folder=folder, folder_label=label(folder), items=items, uid=uid,
        older=len(uids) - len(found), show_images=request.args.get("images") == "1",
        form=EmptyForm(), specials=(SENT, DRAFTS, TRASH))


def _fetch(session: MailboxSession, name: str, uids: list[int]) -> list[Message]:
    """The messages ``uids`` of the folder ``name``, without marking them read, in order."""
    if not uids:
        return []
    session.select(name)
    data = session._call(session.client.fetch, uids, [b"BODY.PEEK[]", b"FLAGS"])
    return [Message(u, data[u][b"BODY[]"], _flags(data[u].get(b"FLAGS", ())))
            for u in uids if u in data and b"BODY[]" in data[u]]


def _sent_replies(session: MailboxSession, box: Box, folder: str, found: list[Message],
                  folders: set[str]) -> list[Message]:
    """The person's own messages of the conversation kept in « Messages envoyés » (they are
    part of it, as a reader sees it), unless the conversation is there already."""
    if folder in (SENT, DRAFTS, TRASH) or SENT not in folders or not found:
        return []
    own: set[str] = set()
    answered: set[str] = set()
    for message in found:
        ids, refs = threads.message_ids(message.raw)
        own |= ids
        answered |= refs
    dates = headers.parse(headers.split_head(found[0].raw)[0]).values("date")
    first = listing.parse_date(dates[0] if dates else None)
    since = first.astimezone(UTC).date() if first and first.tzinfo else \
        datetime.now(UTC).date() - timedelta(days=365)
    sent_name = box.imap_name(SENT)
    uids = threads.replies_in(session, sent_name, own, answered, since)
    copies = _fetch(session, sent_name, uids[-threads.MAX_SHOWN:])
    return [m for m in copies if not threads.message_ids(m.raw)[0] & own]


def _when(item: Shown) -> datetime:
    return item.reading.date or datetime.min.replace(tzinfo=UTC)


def _flags(raw: object) -> tuple[str, ...]:
    values = raw if isinstance(raw, (tuple, list)) else ()
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


@bp.post("/<int:box_id>/vue")
@mailbox_route(Right.READ)
def choose_view(box: Box, folder: str) -> Response:
    """Save the list's view (``vue``: ``messages`` or ``conversations``) as the person's
    choice, then back to the folder."""
    _save_choice()
    return redirect(url_for("mail.folder", box_id=box.id, dossier=folder))


@bp.post("/affichage")
def choose_view_in_preferences() -> Response:
    """The same choice from Mon compte › Préférences, then back there."""
    _save_choice()
    return redirect(url_for("account.preferences"))


def _save_choice() -> None:
    """Save ``vue`` (audited when it changes) and say so; a French error for anything else."""
    asked = request.form.get("vue", "")
    if asked not in VIEWS:
        flash("Choix d’affichage invalide : « messages » ou « conversations ».", "error")
        return
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
    flash("Listes affichées par conversation." if grouped else "Listes affichées message par "
          "message.", "success")
