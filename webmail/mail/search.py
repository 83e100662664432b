"""Search in the current folder or in every folder of the mailbox: text, sender, recipient,
date range, unread, with attachment. Text is searched in Dovecot's full-text index (bodies and
attachments' text: ``mailstore.fts``), word by word (``webmail.mail.fulltext``: what a query
may hold, one result list over several folders, page by page); dates are the messages'
``Date`` (SENTSINCE/SENTBEFORE, RFC 3501 §6.4.4), the date the lists show. Messages marked
deleted are never results (UNDELETED). "With attachment" has no IMAP criterion: it is read from
the found messages' body structures, as the list's "PJ" marker is. In one folder, the results
can be acted on, all of them included (``bulk.Selection``: the form carries the query, the
server searches again); each search is audited (counts, never the words)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from flask import render_template, request

from mailstore import listing
from mailstore.imap import MailboxSession
from webmail.forms import EmptyForm
from webmail.mail import PER_PAGE, bp, fulltext, listview
from webmail.mail.access import Box, Right, accessible_boxes, audit, imap, mailbox_route
from webmail.mail.badge import voucher
from webmail.mail.folders import DRAFTS, SENT, TRASH, box_folders, directory_names, label
from webmail.mail.fulltext import QueryError, Words


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
    page: int = 1
    words: Words = field(default_factory=lambda: Words((), ()))
    error: str = ""  # why the query is refused (French), empty when it is not

    @classmethod
    def from_args(cls) -> Query:
        return cls.from_values(request.args)

    @classmethod
    def from_values(cls, a: Mapping[str, str]) -> Query:
        """The query of a search page's URL, or of the list form that acts on its results;
        a query the search refuses comes back with its ``error``."""
        raw = {k: a.get(k, "") for k in ("q", "de", "a", "depuis", "avant", "page")}
        shown = {k: " ".join(raw[k].split())[:fulltext.MAX_LENGTH] for k in ("q", "de", "a")}
        page = int(raw["page"]) if raw["page"].isdigit() and len(raw["page"]) < 6 else 1
        flags = (a.get("non_lus") == "1", a.get("pj") == "1", a.get("portee") == "tous")
        try:
            words = fulltext.words(raw["q"])
            sender = fulltext.address_part(raw["de"], "Expéditeur")
            recipient = fulltext.address_part(raw["a"], "Destinataire")
            since, until = _date(raw["depuis"], "Depuis le"), _date(raw["avant"], "Jusqu’au")
            if since and until and since > until:
                raise QueryError("Dates : « Depuis le » doit précéder « Jusqu’au ».")
        except QueryError as refused:
            return cls(shown["q"], shown["de"], shown["a"], None, None, *flags, page=page,
                       error=str(refused))
        return cls(" ".join(raw["q"].split()), sender, recipient, since, until, *flags,
                   page=max(page, 1), words=words)

    def args(self, **changes: str) -> dict[str, str]:
        """The query as the search page's URL parameters (the list form carries them; paging
        links add ``portee`` and ``page``)."""
        found = {"q": self.text, "de": self.sender, "a": self.recipient,
                 "depuis": self.since.isoformat() if self.since else "",
                 "avant": self.until.isoformat() if self.until else "",
                 "non_lus": "1" if self.unread else "", "pj": "1" if self.attachment else "",
                 **changes}
        return {k: v for k, v in found.items() if v}

    @property
    def empty(self) -> bool:
        return not (self.text or self.sender or self.recipient or self.since or self.until
                    or self.unread or self.attachment)

    def criteria(self) -> list[Any]:
        """IMAP SEARCH criteria: UNDELETED, each word in the subject or the body, FROM, TO,
        dates, UNSEEN."""
        found: list[Any] = ["UNDELETED", *fulltext.text_criteria(self.words)]
        for key, value in (("FROM", self.sender), ("TO", self.recipient)):
            if value:
                found += [key, value]
        if self.since:
            found += ["SENTSINCE", self.since]
        if self.until:  # "avant le" inclusive for the reader: before the next day
            found += ["SENTBEFORE", self.until + timedelta(days=1)]
        if self.unread:
            found.append("UNSEEN")
        return found


def _date(value: str, label: str) -> date | None:
    """A date field as French readers write it, 12/03/2026 (or ISO 8601, 2026-03-12, which
    the search's own links carry).

    Raises:
        QueryError: anything else.
    """
    text = value.strip()
    if not text:
        return None
    for pattern in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            found = datetime.strptime(text, pattern).date()
        except ValueError:
            continue
        if 1990 <= found.year <= 2100:
            return found
    raise QueryError(f"Date « {label} » invalide : écrivez-la sous la forme jj/mm/aaaa.")


def matching(session: MailboxSession, box: Box, folder: str, query: Query) -> list[int]:
    """Every UID of ``folder`` (inside ``box``) matching ``query``, newest first, as the
    search page counts them ("Avec pièce jointe" judged as its list's marker is)."""
    if query.error or query.empty:
        return []  # never "every message" for a query the page would not have run
    name = box.imap_name(folder)
    uids = session.sorted_uids(name, query.criteria())
    if query.attachment and uids:
        uids = fulltext.with_attachment(session, name, uids)
    return uids


@bp.get("/<int:box_id>/recherche")
@mailbox_route(Right.READ)
def search(box: Box, folder: str) -> tuple[str, int]:
    """The search form and its results (400 with the form and the reason for a query the
    search refuses)."""
    query = Query.from_args()
    results, state = None, None
    with imap() as session:
        folders = box_folders(session, box)
        if not query.empty and not query.error:
            names = [f.name for f in folders] if query.everywhere else [folder]
            keep = fulltext.with_attachment if query.attachment else None
            results = fulltext.search(session, box, names, query.criteria(), voucher(),
                                      page=query.page, per_page=PER_PAGE, keep=keep)
            results.rows = listing.with_directory_names(results.rows, directory_names)
            if not query.everywhere:
                state = listview.snapshot(session, box.imap_name(folder))
    if results is not None:
        audit("mail.search", box, scope="tous" if query.everywhere else "dossier",
              folder="" if query.everywhere else folder, words=len(query.words.kept),
              results=results.total, page=results.page, failed=len(results.failed))
    page = render_template(
        "mail/search.html", box=box, boxes=accessible_boxes(), folders=folders, folder=folder,
        folder_label=label(folder), query=query, results=results,
        searched=results is not None, total=results.total if results else 0,
        until=state.uidnext - 1 if state else None, form=EmptyForm(), labels=label,
        specials=(SENT, DRAFTS, TRASH))
    return page, 400 if query.error else 200
