"""What the message list does to the selected messages: mark read or unread, move, delete
(to the Corbeille; for good from the Corbeille), restore, and empty the Corbeille after a
confirmation page. Each is a POST (CSRF-checked), authorised for its own right, audited with
ids and counts only."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from mailstore.errors import ImapError
from webmail.forms import EmptyForm
from webmail.mail import bp, plural_fr
from webmail.mail.access import Box, Right, accessible_boxes, audit, imap, mailbox_route
from webmail.mail.access import valid_folder as _valid
from webmail.mail.badge import voucher
from webmail.mail.bulk import Selection, answer, in_batches
from webmail.mail.folders import DRAFTS, INBOX, SENT, TRASH, box_folders, label
from webmail.mail.listview import batches

# etat= -> (flag, set it?, what the message says: participle and its complement, both agreeing
# with "message(s)" when the complement ends with an adjective).
_MARKS = {"lu": ("\\Seen", True, "marqué", "comme lu"),
          "non-lu": ("\\Seen", False, "marqué", "comme non lu"),
          "suivi": ("\\Flagged", True, "marqué", "comme suivi"),
          "non-suivi": ("\\Flagged", False, "retiré", "des suivis")}


def _nothing(box: Box, folder: str, selection: Selection | None = None,
             action: str = "") -> Response:
    """Nothing to do: nothing ticked, a "tout" from a page too old to say what it showed, or
    messages already gone (a second click): said, and the last two audited."""
    if selection is not None and selection.everything and selection.until is None:
        audit(action, box, "stale", folder=folder, **selection.details())
        return answer(box, folder, "La sélection de tous les messages n’est plus valable : "
                      "affichez la liste de nouveau, puis recommencez.", "error", status=400)
    if selection is not None and not selection.empty:
        audit(action, box, "gone", folder=folder, count=0, **selection.details())
        return answer(box, folder, "Ces messages ne sont plus dans ce dossier : rien n’a "
                      "été fait.", "info")
    return answer(box, folder, "Sélectionnez d’abord un ou plusieurs messages.", "info")


def _count(count: int, participle: str, complement: str = "") -> str:
    """``"1 message déplacé"``, ``"3 messages marqués comme lus"`` (the participle and a
    "comme …" complement agree)."""
    many = "s" if count > 1 else ""
    text = f"{plural_fr(count, 'message')} {participle}{many}"
    if complement:
        text += f" {complement}{many if complement.startswith('comme ') else ''}"
    return text


@bp.post("/<int:box_id>/marquer")
@mailbox_route(Right.FLAG)
def mark(box: Box, folder: str) -> Response:
    """Mark the chosen messages read (``etat=lu``), unread (``non-lu``), followed
    (``suivi``) or not (``non-suivi``)."""
    flag, on, participle, complement = _MARKS.get(request.form.get("etat", ""),
                                                  _MARKS["non-lu"])
    selection = Selection()
    if selection.empty:
        return _nothing(box, folder)
    with imap() as session:
        uids = selection.resolve(session, box, folder)
        change = session.set_flags if on else session.clear_flags
        done = in_batches(uids, lambda chunk: change(box.imap_name(folder), chunk, [flag]),
                          budget=selection.budget)
    if not uids:
        return _nothing(box, folder, selection, "mail.flag")
    which: dict[str, Any] = {"seen" if flag == "\\Seen" else "flagged": on}
    audit("mail.flag", box, folder=folder, count=done, remaining=len(uids) - done, **which,
          **selection.details())
    return answer(box, folder, f"{_count(done, participle, complement)}.", count=done,
                  remaining=len(uids) - done)


@bp.post("/<int:box_id>/deplacer")
@mailbox_route(Right.DELETE)
def move(box: Box, folder: str) -> Response:
    """Move the chosen messages to the folder ``cible`` of the same mailbox."""
    target = request.form.get("cible", "")
    selection = Selection()
    if selection.empty:
        return _nothing(box, folder)
    if not _valid(target) or target == folder:
        return answer(box, folder, "Choisissez un dossier de destination différent.",
                      "error", status=400)
    return _move(box, folder, selection, target, "mail.move",
                 lambda n: f"{_count(n, 'déplacé')} vers « {label(target)} ».")


@bp.post("/<int:box_id>/supprimer")
@mailbox_route(Right.DELETE)
def delete(box: Box, folder: str) -> Response:
    """Delete: to the Corbeille; from the Corbeille, for good."""
    selection = Selection()
    if selection.empty:
        return _nothing(box, folder)
    if folder != TRASH:
        return _move(box, folder, selection, TRASH, "mail.delete",
                     lambda n: f"{_count(n, 'placé')} dans la Corbeille.")
    with imap() as session:
        uids = selection.resolve(session, box, folder)
        done = in_batches(uids, lambda chunk: session.expunge(box.imap_name(TRASH), chunk),
                          budget=selection.budget)
    if not uids:
        return _nothing(box, folder, selection, "mail.expunge")
    audit("mail.expunge", box, folder=TRASH, count=done, remaining=len(uids) - done,
          **selection.details())
    return answer(box, folder, f"{_count(done, 'supprimé')} définitivement.", count=done,
                  remaining=len(uids) - done)


@bp.post("/<int:box_id>/restaurer")
@mailbox_route(Right.DELETE)
def restore(box: Box, folder: str) -> Response:
    """From the Corbeille back where such a message lives: Brouillons for a draft, Messages
    envoyés for what the mailbox sent, else the Boîte de réception (IMAP does not remember
    where a message came from)."""
    selection = Selection()
    if selection.empty or folder != TRASH:
        return _nothing(box, TRASH)
    groups: dict[str, list[int]] = {}
    with imap() as session:
        from mailstore.listing import rows

        uids = selection.resolve(session, box, TRASH)
        for chunk in batches(uids):
            for row in rows(session, box.imap_name(TRASH), chunk, voucher()):
                target = (DRAFTS if "\\Draft" in row.flags else
                          SENT if box.address in row.sender.lower() else INBOX)
                groups.setdefault(target, []).append(row.uid)
        count, ends = 0, time.monotonic() + (selection.budget or 0)
        for target, group in groups.items():
            budget = max(0.0, ends - time.monotonic()) if selection.budget else None
            count += in_batches(group, functools.partial(
                session.move, box.imap_name(TRASH), destination=box.imap_name(target)),
                budget=budget)
    left = sum(len(g) for g in groups.values()) - count
    if not count:
        return _nothing(box, TRASH, selection, "mail.restore")
    audit("mail.restore", box, folder=TRASH, count=count, remaining=left,
          **selection.details())
    names = ", ".join(f"« {label(t)} »" for t in groups)
    return answer(box, TRASH, f"{_count(count, 'restauré')} vers {names}.", count=count,
                  remaining=left)


def _move(box: Box, folder: str, selection: Selection, target: str, action: str,
          done: Callable[[int], str]) -> Response:
    uids: list[int] = []
    try:
        with imap() as session:
            uids = selection.resolve(session, box, folder)
            moved = in_batches(uids, lambda chunk: session.move(
                box.imap_name(folder), chunk, box.imap_name(target)), budget=selection.budget)
    except ImapError:
        audit(action, box, "refused", folder=folder, to_folder=target, count=len(uids),
              **selection.details())
        return answer(box, folder, "Le serveur de messagerie a refusé le déplacement.",
                      "error", status=409)
    if not uids:
        return _nothing(box, folder, selection, action)
    audit(action, box, folder=folder, to_folder=target, count=moved,
          remaining=len(uids) - moved, **selection.details())
    return answer(box, folder, done(moved), count=moved, remaining=len(uids) - moved)


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
