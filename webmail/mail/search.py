"""Search in the current folder or in every folder of the mailbox: text, sender, recipient,
date range, unread, with attachment — IMAP SEARCH on Dovecot (RFC 3501 §6.4.4; dates are the
messages' ``Date``, SENTSINCE/SENTBEFORE, the date the lists show). "With attachment" has no
IMAP criterion: it is read from the body structures, as the list's filter does
(``listview.attachment_uids``). In one folder, the results can be acted on, all of them
included (``bulk.Selection``: the form carries the query, the server searches again)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from flask import render_template, request

from mailstore.errors import ImapError
from mailstore.imap import MailboxSession
from webmail.forms import EmptyForm
from webmail.mail import bp, listing, listview
from webmail.mail.access import Box, Right, accessible_boxes, imap, mailbox_route
from webmail.mail.badge import voucher
from webmail.mail.folders import DRAFTS, SENT, TRASH, box_folders, directory_names, label

MAX_RESULTS = 200


@dataclass(frozen=True)
class Query:
    text: str
    sender: str
    recipient: str
    since: date | None
    until: date | None
    unread: bool
    attachment: bool
    everywhere: bool

    @classmethod
    def from_args(cls) -> Query:
        return cls.from_values(request.args)

    @classmethod
    def from_values(cls, a: Mapping[str, str]) -> Query:
        """The query of a search page's URL, or of the list form that acts on its results."""
        return cls(a.get("q", "").strip()[:200], a.get("de", "").strip()[:200],
                   a.get("a", "").strip()[:200], _date(a.get("depuis")), _date(a.get("avant")),
                   a.get("non_lus") == "1", a.get("pj") == "1", a.get("portee") == "tous")

    def args(self) -> dict[str, str]:
        """The query as the search page's URL parameters (the list form carries them)."""
        found = {"q": self.text, "de": self.sender, "a": self.recipient,
                 "depuis": self.since.isoformat() if self.since else "",
                 "avant": self.until.isoformat() if self.until else "",
                 "non_lus": "1" if self.unread else "", "pj": "1" if self.attachment else ""}
        return {k: v for k, v in found.items() if v}

    @property
    def empty(self) -> bool:
        return not (self.text or self.sender or self.recipient or self.since or self.until
                    or self.unread or self.attachment)

    def criteria(self) -> list[Any]:
        found: list[Any] = []
        for key, value in (("TEXT", self.text), ("FROM", self.sender), ("TO", self.recipient)):
            if value:
                found += [key, value]
        if self.since:
            found += ["SENTSINCE", self.since]
        if self.until:  # "avant le" inclusive for the reader: before the next day
            found += ["SENTBEFORE", self.until + timedelta(days=1)]
        if self.unread:
            found.append("UNSEEN")
        return found or ["ALL"]


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def matching(session: MailboxSession, box: Box, folder: str, query: Query) -> list[int]:
    """Every UID of ``folder`` (inside ``box``) matching ``query``, newest first. "Avec
    pièce jointe" is judged as the list's filter judges it (``listview.attachment_uids``)."""
    name = box.imap_name(folder)
    uids = session.sorted_uids(name, query.criteria())
    if query.attachment:
        attached = listview.attachment_uids(session, name, listview.snapshot(session, name))
        uids = [uid for uid in uids if uid in attached]
    return uids


def run(session: MailboxSession, box: Box, folders: list[str], query: Query,
        ) -> tuple[list[listing.Row], int]:
    """Matching messages of ``folders``, newest first, at most ``MAX_RESULTS``, and how many
    match in all."""
    found: list[listing.Row] = []
    total = 0
    verdicts = voucher()
    for name in folders:
        try:
            uids = matching(session, box, name, query)
        except ImapError:
            continue  # a folder that cannot be searched is skipped, not fatal
        total += len(uids)
        rows = listing.rows(session, box.imap_name(name), uids[:MAX_RESULTS], verdicts)
        found += [replace(r, folder=name) for r in rows]
    found.sort(key=lambda r: r.date.timestamp() if r.date else 0, reverse=True)
    return listing.with_directory_names(found[:MAX_RESULTS], directory_names), total


@bp.get("/<int:box_id>/recherche")
@mailbox_route(Right.READ)
def search(box: Box, folder: str) -> str:
    """The search form and its results."""
    query = Query.from_args()
    with imap() as session:
        folders = box_folders(session, box)
        names = [f.name for f in folders] if query.everywhere else [folder]
        results, total = ([], 0) if query.empty else run(session, box, names, query)
        state = None if query.everywhere or query.empty else listview.snapshot(
            session, box.imap_name(folder))
    return render_template("mail/search.html", box=box, boxes=accessible_boxes(),
                           folders=folders, folder=folder, folder_label=label(folder),
                           query=query, results=results, searched=not query.empty,
                           total=total, until=state.uidnext - 1 if state else None,
                           limit=MAX_RESULTS, form=EmptyForm(), labels=label,
                           specials=(SENT, DRAFTS, TRASH))
