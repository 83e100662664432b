"""Which messages an action of the list applies to, and the "suivi" flag (IMAP \\Flagged).

An action names its messages one of two ways:
- ticked ones: ``uid`` fields (at most ``MAX_SELECTED``; a conversation's box holds its UIDs
  separated by commas), of which only those still in the folder are acted on — a second
  click on "Supprimer" finds them gone and says so;
- "Sélectionner les N messages" (``tout=1``): every message of the view the page showed —
  the folder and its ``filtre``, or a search's criteria (``recherche=1``) — found by the
  server (UID SORT/SEARCH), never posted by the browser, and only up to ``jusqua``, the
  highest UID the page knew of: mail that arrived since is left alone. The work goes in
  batches of ``listview.BATCH`` UIDs per command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from flask import flash, jsonify, redirect, request, url_for
from werkzeug.wrappers import Response

from mailstore.imap import MailboxSession
from webmail.mail import bp, imap_uid, listview
from webmail.mail.access import Box, Right, audit, imap, mailbox_route

MAX_SELECTED = 1000
# A "tout" request takes no new batch after this long. Moving or deleting expunges, and with
# the full-text index (mailstore.fts) Dovecot expunges some 60 messages a second: 10,000 take
# minutes, longer than a page should wait. What is left stays selected and the next click
# (found again by the server) goes on with it.
TIME_BUDGET = 15.0


class Selection:
    """What the form asked for: ``everything`` (the view) or ``uids``."""

    def __init__(self) -> None:
        form = request.form
        self.everything = form.get("tout") == "1"
        # A conversation's box (mail/conversations.html) ticks all its UIDs: "12,15,19".
        values = [v for field in form.getlist("uid") for v in field.split(",", MAX_SELECTED)]
        uids = [u for u in map(imap_uid, values[:4 * MAX_SELECTED]) if u is not None]
        self.uids = list(dict.fromkeys(uids))[:MAX_SELECTED]
        self.until = imap_uid(form.get("jusqua"))
        self.view = listview.View.parse(form)

    @property
    def empty(self) -> bool:
        return not self.everything and not self.uids

    @property
    def budget(self) -> float | None:
        """The time a request may spend: bounded for "tout" (ticked ones are a page at most)."""
        return TIME_BUDGET if self.everything else None

    def details(self) -> dict[str, Any]:
        """For the audit record: how the messages were chosen (never what they say)."""
        if not self.everything:
            return {}
        return {"all": True, "filter": self.view.filter,
                "search": request.form.get("recherche") == "1"}

    def resolve(self, session: MailboxSession, box: Box, folder: str) -> list[int]:
        """The UIDs of ``folder`` (a name inside ``box``) the action applies to."""
        name = box.imap_name(folder)
        if not self.everything:
            return listview.present(session, name, self.uids)
        if self.until is None:
            return []
        if request.form.get("recherche") == "1":
            from webmail.mail.search import Query, matching

            uids = matching(session, box, folder, Query.from_values(request.form))
        else:
            state = listview.snapshot(session, name)
            uids = listview.view_uids(session, name, self.view, state=state)
        return sorted(uid for uid in uids if uid <= self.until)


def in_batches(uids: list[int], apply: Callable[[list[int]], None], *,
               budget: float | None = None) -> int:
    """``apply`` to ``uids`` a bounded slice at a time; with a ``budget`` (seconds), no new
    slice once it is spent. How many were done."""
    start, done = time.monotonic(), 0
    for chunk in listview.batches(uids):
        if budget is not None and done and time.monotonic() - start >= budget:
            break
        apply(chunk)
        done += len(chunk)
    return done


def wants_json() -> bool:
    """A script asked (``Accept: application/json``): answer data, not a page."""
    return request.accept_mimetypes.best == "application/json"


def answer(box: Box, folder: str, text: str, category: str = "success", *,
           count: int = 0, status: int = 200, remaining: int = 0) -> Response:
    """The reply of a list action: JSON for a script, else a message and back to the page.
    ``remaining``: messages of a "tout" left for the next click (``TIME_BUDGET``)."""
    if remaining:
        text += (f" Il en reste {remaining} : ils restent sélectionnés, recommencez pour "
                 "les traiter.")
    if wants_json():
        return cast(Response, (jsonify(message=text, count=count, remaining=remaining,
                                       ok=category != "error"), status))
    flash(text, category)
    return back(box, folder, everything=bool(remaining))


def back(box: Box, folder: str, *, everything: bool = False) -> Response:
    """To ``retour`` (a page of the mail), else the folder; ``everything``: with "tout" still
    chosen."""
    target = request.form.get("retour", "")
    if not (target.startswith("/courrier/") and "//" not in target and "\\" not in target
            and not any(c in target for c in "\r\n")):
        target = url_for("mail.folder", box_id=box.id, dossier=folder)
    if everything:
        target += ("&" if "?" in target else "?") + "tout=1"
    return redirect(target)


@bp.post("/<int:box_id>/suivi")
@mailbox_route(Right.FLAG)
def follow(box: Box, folder: str) -> Response:
    """Set (``suivre=<uid>``) or clear (``retirer=<uid>``) the "suivi" flag of a message."""
    wanted = imap_uid(request.form.get("suivre"))
    dropped = imap_uid(request.form.get("retirer"))
    uid = wanted or dropped
    if uid is None or (wanted and dropped):
        return answer(box, folder, "Choisissez un message à suivre.", "error", status=400)
    with imap() as session:
        name = box.imap_name(folder)
        if not listview.present(session, name, [uid]):
            return answer(box, folder, "Ce message n’est plus dans ce dossier.", "error",
                          status=404)
        (session.set_flags if wanted else session.clear_flags)(name, [uid], ["\\Flagged"])
    audit("mail.flag", box, folder=folder, count=1, flagged=bool(wanted))
    if wants_json():
        return jsonify(message="Message suivi." if wanted else "Message non suivi.",
                       flagged=bool(wanted), uid=uid, ok=True)
    flash("Message marqué comme suivi." if wanted else "Le message n’est plus suivi.",
          "success")
    return back(box, folder)
