"""Folders of a mailbox and their message lists; creating, renaming and deleting one's own
folders. The special folders keep their IMAP names (RFC 6154 special-use: ``Sent``,
``Drafts``, ``Trash``) and are shown with their French names."""

from __future__ import annotations

from dataclasses import dataclass, replace

from flask import flash, redirect, render_template, request, url_for
from imapclient.exceptions import IMAPClientError
from werkzeug.wrappers import Response

from mailstore import listing
from mailstore.errors import ImapError
from mailstore.imap import MailboxSession
from trust_space.directory import display_names
from webmail.context import mss
from webmail.forms import EmptyForm
from webmail.mail import bp, listview
from webmail.mail.access import (
    INBOX,
    Box,
    Right,
    accessible_boxes,
    audit,
    authorise,
    imap,
    mailbox_route,
    own_box,
    valid_folder,
)
from webmail.mail.badge import voucher
from webmail.mail.preferences import choices

SENT, DRAFTS, TRASH = "Sent", "Drafts", "Trash"
LABELS = {INBOX: "Boîte de réception", DRAFTS: "Brouillons", SENT: "Messages envoyés",
          TRASH: "Corbeille", "Junk": "Indésirables"}
_ORDER = [INBOX, DRAFTS, SENT, TRASH, "Junk"]


@dataclass(frozen=True)
class FolderView:
    name: str  # inside the mailbox
    messages: int
    unseen: int

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    @property
    def special(self) -> bool:
        return self.name in LABELS


def label(name: str) -> str:
    """The French name of a folder."""
    return LABELS.get(name, name)


def box_folders(session: MailboxSession, box: Box) -> list[FolderView]:
    """The folders of ``box`` with their counts, special ones first."""
    found = []
    for folder in listing.folder_counts(session):
        name = box.local_name(folder.name)
        if name is not None:
            found.append(FolderView(name, folder.messages, folder.unseen))
    return sorted(found, key=lambda f: (_ORDER.index(f.name) if f.name in _ORDER else 99,
                                        f.name.lower()))


@bp.get("")
@bp.get("/")  # /courrier/ as typed or bookmarked: the same page, not a 404
def index() -> Response:
    """The user's own Boîte de réception (or the first mailbox they may use)."""
    boxes = accessible_boxes()
    box = boxes[0] if boxes else own_box()
    return redirect(url_for("mail.folder", box_id=box.id))


def directory_names(addresses: set[str]) -> dict[str, str]:
    """The directory's names of ``addresses`` (``listing.with_directory_names``)."""
    with mss().db.reading() as conn:
        return display_names(conn, addresses)


@bp.get("/<int:box_id>")
@mailbox_route(Right.READ)
def folder(box: Box, folder: str) -> str:
    """A page of a folder's messages in the view the URL asks for (``listview.View``: sort,
    direction, filter, page), as many as the person's page size. Asked with
    ``X-MSS-Fragment: 1``, only the list itself (``#liste``) is rendered."""
    from webmail.mail import conversations  # issue #17, reading: the list by conversation

    if conversations.wanted():
        return conversations.folder_page(box, folder)
    view = listview.View.parse(request.args)
    size = choices().page_size
    sent = folder in (SENT, DRAFTS)
    with imap() as session:
        folders = box_folders(session, box)
        if folder not in {f.name for f in folders}:
            from mailstore.errors import MailboxNotFound

            raise MailboxNotFound("Dossier introuvable")
        name = box.imap_name(folder)
        state = listview.snapshot(session, name)
        uids = listview.view_uids(session, name, view, sent=sent, state=state)
        pages = max(1, -(-len(uids) // size))
        view = replace(view, page=min(view.page, pages))
        chunk = uids[(view.page - 1) * size:view.page * size]
        rows = listing.rows(session, name, chunk, voucher())
    page = listing.Listing(listing.with_directory_names(rows, directory_names), len(uids),
                           view.page, size)
    return render_template("mail/list.html", box=box, boxes=accessible_boxes(),
                           folders=folders, folder=folder, folder_label=label(folder),
                           listing=page, view=view, sent=sent, form=EmptyForm(),
                           until=state.uidnext - 1 if state else None,
                           specials=(SENT, DRAFTS, TRASH), sorts=listview.SORTS,
                           filters=listview.FILTERS, page_sizes=listview.PAGE_SIZES)


@bp.get("/<int:box_id>/dossiers")
@mailbox_route(Right.READ)
def manage(box: Box, folder: str) -> str:
    """Folder management page (create, rename, delete)."""
    with imap() as session:
        folders = box_folders(session, box)
    return render_template("mail/folders.html", box=box, boxes=accessible_boxes(),
                           folders=folders, folder=folder, form=EmptyForm())


@bp.post("/<int:box_id>/dossiers")
@mailbox_route(Right.FOLDERS)
def change_folders(box: Box, folder: str) -> Response:
    """Create (``nom``), rename (``dossier`` → ``nom``) or delete (``dossier``) a folder."""
    what = request.form.get("operation", "")
    name = " ".join(request.form.get("nom", "").split())
    if what in ("create", "rename") and (not valid_folder(name) or name in LABELS
                                         or name.upper() == INBOX):
        flash("Nom de dossier invalide ou réservé (pas de « / », « * », « % » ni de nom "
              "de dossier spécial).", "error")
        return redirect(url_for("mail.manage", box_id=box.id))
    if what != "create" and folder in LABELS:
        flash("Les dossiers spéciaux ne peuvent être ni renommés ni supprimés.", "error")
        return redirect(url_for("mail.manage", box_id=box.id))
    try:
        _apply(box, what, folder, name)
    except ImapError:
        audit(f"mail.folder.{what}", box, "refused", folder=folder)
        flash("Le serveur de messagerie a refusé cette opération (dossier existant, non vide "
              "ou droits insuffisants).", "error")
        return redirect(url_for("mail.manage", box_id=box.id))
    audit(f"mail.folder.{what}", box, folder=folder if what != "create" else name)
    flash({"create": f"Dossier « {name} » créé.", "rename": f"Dossier renommé en « {name} ».",
           "delete": f"Dossier « {folder} » supprimé."}.get(what, "Fait."), "success")
    return redirect(url_for("mail.manage", box_id=box.id))


def _apply(box: Box, what: str, folder: str, name: str) -> None:
    """One folder operation (CSRF is checked for every POST by ``webmail.security``)."""
    with imap() as session:
        client = session.client
        session.select(box.imap_name(INBOX))  # never stay on a folder about to go
        try:
            if what == "create":
                client.create_folder(box.imap_name(name))
            elif what == "rename":
                client.rename_folder(box.imap_name(folder), box.imap_name(name))
            elif what == "delete":
                client.delete_folder(box.imap_name(folder))
            else:
                raise ImapError("opération inconnue")
        except IMAPClientError as exc:
            raise ImapError(f"Erreur IMAP : {exc}") from exc


def require(box: Box, right: Right) -> Box:
    """Check one more right on an already authorised mailbox (``access.authorise``)."""
    return authorise(box.id, right)
