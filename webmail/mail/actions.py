"""What the message list does to the selected messages: mark read or unread, move, delete
(to the Corbeille; for good from the Corbeille), restore, and empty the Corbeille after a
confirmation page. Each is a POST (CSRF-checked), authorised for its own right, audited with
ids and counts only."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from mailstore.errors import ImapError
from webmail.forms import EmptyForm
from webmail.mail import bp, imap_uid, plural_fr
from webmail.mail.access import Box, Right, accessible_boxes, audit, imap, mailbox_route
from webmail.mail.access import valid_folder as _valid
from webmail.mail.badge import voucher
from webmail.mail.folders import DRAFTS, INBOX, SENT, TRASH, box_folders, label

MAX_SELECTED = 1000


def selected() -> list[int]:
    """The UIDs ticked in the list (``uid`` fields), positive integers only."""
    uids = [uid for uid in map(imap_uid, request.form.getlist("uid")) if uid is not None]
    return list(dict.fromkeys(uids))[:MAX_SELECTED]


def _back(box: Box, folder: str) -> Response:
    target = request.form.get("retour", "")
    if target.startswith("/courrier/") and "//" not in target and "\\" not in target:
        return redirect(target)
    return redirect(url_for("mail.folder", box_id=box.id, dossier=folder))


def _nothing(box: Box, folder: str) -> Response:
    flash("Sélectionnez d’abord un ou plusieurs messages.", "info")
    return _back(box, folder)


def _count(count: int, participle: str) -> str:
    """``"1 message déplacé"``, ``"3 messages déplacés"`` (the participle agrees)."""
    return plural_fr(count, f"message {participle}", f"messages {participle}s")


@bp.post("/<int:box_id>/marquer")
@mailbox_route(Right.FLAG)
def mark(box: Box, folder: str) -> Response:
    """Mark the selected messages read (``etat=lu``) or unread."""
    uids = selected()
    if not uids:
        return _nothing(box, folder)
    read = request.form.get("etat") == "lu"
    with imap() as session:
        change = session.set_flags if read else session.clear_flags
        change(box.imap_name(folder), uids, ["\\Seen"])
    audit("mail.flag", box, folder=folder, count=len(uids), seen=read)
    flash(f"{_count(len(uids), 'marqué')} comme {'lu' if read else 'non lu'}"
          f"{'s' if len(uids) > 1 else ''}.", "success")
    return _back(box, folder)


@bp.post("/<int:box_id>/deplacer")
@mailbox_route(Right.DELETE)
def move(box: Box, folder: str) -> Response:
    """Move the selected messages to the folder ``cible`` of the same mailbox."""
    target = request.form.get("cible", "")
    uids = selected()
    if not uids:
        return _nothing(box, folder)
    if not _valid(target) or target == folder:
        flash("Choisissez un dossier de destination différent.", "error")
        return _back(box, folder)
    return _move(box, folder, uids, target, "mail.move",
                 f"{_count(len(uids), 'déplacé')} vers « {label(target)} ».")


@bp.post("/<int:box_id>/supprimer")
@mailbox_route(Right.DELETE)
def delete(box: Box, folder: str) -> Response:
    """Delete: to the Corbeille; from the Corbeille, for good."""
    uids = selected()
    if not uids:
        return _nothing(box, folder)
    if folder != TRASH:
        return _move(box, folder, uids, TRASH, "mail.delete",
                     f"{_count(len(uids), 'placé')} dans la Corbeille.")
    with imap() as session:
        session.expunge(box.imap_name(TRASH), uids)
    audit("mail.expunge", box, folder=TRASH, count=len(uids))
    flash(f"{_count(len(uids), 'supprimé')} définitivement.", "success")
    return _back(box, folder)


@bp.post("/<int:box_id>/restaurer")
@mailbox_route(Right.DELETE)
def restore(box: Box, folder: str) -> Response:
    """From the Corbeille back where such a message lives: Brouillons for a draft, Messages
    envoyés for what the mailbox sent, else the Boîte de réception (IMAP does not remember
    where a message came from)."""
    uids = selected()
    if not uids or folder != TRASH:
        return _nothing(box, TRASH)
    with imap() as session:
        from webmail.mail.listing import rows

        found = rows(session, box.imap_name(TRASH), uids, voucher())
        groups: dict[str, list[int]] = {}
        for row in found:
            target = (DRAFTS if "\\Draft" in row.flags else
                      SENT if box.address in row.sender.lower() else INBOX)
            groups.setdefault(target, []).append(row.uid)
        for target, group in groups.items():
            session.move(box.imap_name(TRASH), group, box.imap_name(target))
    audit("mail.restore", box, folder=TRASH, count=len(found))
    names = ", ".join(f"« {label(t)} »" for t in groups)
    flash(f"{_count(len(found), 'restauré')} vers {names}.", "success")
    return _back(box, TRASH)


def _move(box: Box, folder: str, uids: list[int], target: str, action: str,
          done: str) -> Response:
    try:
        with imap() as session:
            session.move(box.imap_name(folder), uids, box.imap_name(target))
    except ImapError:
        audit(action, box, "refused", folder=folder, to_folder=target, count=len(uids))
        flash("Le serveur de messagerie a refusé le déplacement.", "error")
        return _back(box, folder)
    audit(action, box, folder=folder, to_folder=target, count=len(uids))
    flash(done, "success")
    return _back(box, folder)


@bp.get("/<int:box_id>/corbeille/vider")
@mailbox_route(Right.DELETE)
def empty_confirm(box: Box, folder: str) -> str:
    """"Vider la corbeille": the confirmation page."""
    with imap() as session:
        count = len(session.sorted_uids(box.imap_name(TRASH)))
        folders = box_folders(session, box)  # the side bar stays as on every mail page
    return render_template("mail/empty_trash.html", box=box, boxes=accessible_boxes(),
                           folders=folders, folder=TRASH, count=count, form=EmptyForm())


@bp.post("/<int:box_id>/corbeille/vider")
@mailbox_route(Right.DELETE)
def empty(box: Box, folder: str) -> Response:
    """Delete every message of the Corbeille for good (after the confirmation page)."""
    if request.form.get("confirmer") != "oui":
        return redirect(url_for("mail.empty_confirm", box_id=box.id))
    with imap() as session:
        uids = session.sorted_uids(box.imap_name(TRASH))
        if uids:
            session.expunge(box.imap_name(TRASH), uids)
    audit("mail.empty_trash", box, folder=TRASH, count=len(uids))
    flash(f"Corbeille vidée ({_count(len(uids), 'supprimé')} définitivement).", "success")
    return redirect(url_for("mail.folder", box_id=box.id, dossier=TRASH))
