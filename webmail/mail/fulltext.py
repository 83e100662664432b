"""Searching a mailbox through Dovecot's full-text index (``mailstore.fts``): what a query may
hold, and one result list over one folder or all of them, page by page.

A query is cut into words (letters and digits; punctuation, quotes, ``*`` and line breaks
only separate words); each word of 3 characters or more must be in the subject or the body
(``OR SUBJECT w BODY w``; the body includes attachments' text), every word (AND). Xapian
drops shorter words, so they are left out here and the page says so. The caller's criteria
carry ``UNDELETED`` (``search.Query.criteria``): a message marked deleted and not yet
expunged is not a result. With ``fts_enforced = yes`` a folder Dovecot cannot search from its
index fails rather than being read message by message; such a folder is named on the page,
not skipped quietly (``mailstore.fts`` says what ``fts_enforced`` does not cover).

All folders at once: Dovecot 2.3 has no multi-folder SEARCH (RFC 7377 MULTISEARCH), so each
folder is selected and sorted (``UID SORT (DATE)``, RFC 5256) in turn; for the page asked, the
newest ``page × per_page`` matches of each folder are dated (one FETCH of their Date field per
folder), merged newest first, and only the page's messages are fetched for the list. Paging
through several folders is bounded (``REACHABLE`` results); the count is always exact.
"""

from __future__ import annotations

import email.utils
import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from mailstore import fts, listing
from mailstore.errors import ImapError, MailboxNotFound
from mailstore.imap import MailboxSession, imaplib_of
from webmail.mail.badge import Voucher

log = logging.getLogger("mss.webmail.mail")

MIN_WORD = fts.PARTIAL  # Xapian's "partial" setting (mailstore.fts): shorter words match nothing
MAX_WORDS = 8
MAX_LENGTH = 200  # characters of a text field
REACHABLE = 1000  # results of a several-folder search that paging reaches
MAX_FOLDERS = 200
_WORD = re.compile(r"[^\W_]+")
_UID = re.compile(rb"\bUID (\d+)")
_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_DATE_FIELD = re.compile(rb"^Date:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


class QueryError(ValueError):
    """A query the search refuses, with its French explanation as the message."""


@dataclass(frozen=True)
class Words:
    kept: tuple[str, ...]  # searched
    dropped: tuple[str, ...]  # too short to be searched


def clean(value: str, label: str) -> str:
    """A text field with its white space (line breaks included) collapsed.

    Raises:
        QueryError: too long, or holding control characters.
    """
    if len(value) > MAX_LENGTH:
        raise QueryError(f"« {label} » est trop long ({MAX_LENGTH} caractères au plus).")
    text = " ".join(value.split())
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in text):
        raise QueryError(f"« {label} » contient des caractères non autorisés.")
    return text


def words(value: str, label: str = "Texte") -> Words:
    """The words of a query (module docstring).

    Raises:
        QueryError: too long, control characters, too many words, or none long enough.
    """
    found = _WORD.findall(clean(value, label))
    kept = tuple(dict.fromkeys(w for w in found if len(w) >= MIN_WORD))
    dropped = tuple(dict.fromkeys(w for w in found if len(w) < MIN_WORD))
    if len(kept) > MAX_WORDS:
        raise QueryError(f"« {label} » : {MAX_WORDS} mots au plus.")
    if found and not kept:
        raise QueryError(f"« {label} » : saisissez au moins un mot de {MIN_WORD} lettres "
                         "ou chiffres (les mots plus courts ne sont pas indexés).")
    return Words(kept, dropped)


def address_part(value: str, label: str) -> str:
    """A sender or recipient criterion: a name or (part of) an address, sent as typed.

    Raises:
        QueryError: as ``words``.
    """
    text = clean(value, label)
    if text and not any(len(w) >= MIN_WORD for w in _WORD.findall(text)):
        raise QueryError(f"« {label} » : au moins {MIN_WORD} lettres ou chiffres.")
    return text


def text_criteria(found: Words) -> list[str]:
    """One ``OR SUBJECT w BODY w`` per word (IMAP ANDs them; RFC 3501 §6.4.4).

    Not ``TEXT``: Xapian answers TEXT as an OR over nine fields (Subject, From, To, Cc, Bcc,
    Message-ID, List-ID, body), and its lookup costs in proportion to the documents found
    (fts-xapian 1.5.5 reads its matches 100 at a time, each page from the start): at 100,000
    messages TEXT was about twice as slow as BODY for a frequent name (bench/search.py).
    Senders and recipients have their own fields (FROM, TO)."""
    return [part for word in found.kept for part in ("OR", "SUBJECT", word, "BODY", word)]


@dataclass
class Results:
    """One page of results over the folders searched."""

    rows: list[listing.Row]
    total: int  # every match, in every folder searched
    page: int
    per_page: int
    reachable: int  # how many of them paging reaches (``REACHABLE`` over several folders)
    failed: list[str] = field(default_factory=list)  # folders that could not be searched
    folders_with_results: int = 0

    @property
    def pages(self) -> int:
        return max(1, -(-min(self.total, self.reachable) // self.per_page))


Filter = Callable[[MailboxSession, str, list[int]], list[int]]


def search(session: MailboxSession, box: Any, folders: Sequence[str], criteria: list[Any],
           voucher: Voucher, *, page: int, per_page: int,
           keep: Filter | None = None) -> Results:
    """Page ``page`` (from 1) of the messages of ``folders`` (names inside ``box``) matching
    ``criteria`` (which should hold ``UNDELETED``), newest first. ``keep`` narrows a folder's
    matches further (e.g. "with attachment") and is given the newest ``REACHABLE`` at most.

    Raises:
        MailboxNotFound: the only folder searched does not exist.
    """
    several = len(folders) > 1
    last_page = max(1, REACHABLE // per_page) if several else 10**6
    page = min(max(page, 1), last_page)
    need = page * per_page
    found: list[tuple[str, list[int]]] = []
    dated: dict[tuple[str, int], float] = {}
    failed: list[str] = []
    # A pooled session's selected folder is seen as it was when last synced: a NOOP brings
    # in what arrived since (RFC 3501 §6.1.2); the other folders are fresh when selected.
    session.noop()
    for name in folders[:MAX_FOLDERS]:
        imap_name = box.imap_name(name)
        try:
            uids = session.sorted_uids(imap_name, criteria)
            if keep is not None and uids:
                uids = keep(session, imap_name, uids[:REACHABLE])
            if several and uids:
                dated.update(((name, uid), when)
                             for uid, when in sent_dates(session, uids[:need]).items())
        except MailboxNotFound:
            if not several:
                raise
            continue  # removed since the folders were listed
        except ImapError as exc:
            log.warning("recherche impossible dans un dossier : %s", exc.code)
            failed.append(name)
            continue
        if uids:
            found.append((name, uids))
    total = sum(len(uids) for _name, uids in found)
    chunk = _page(found, dated, (page - 1) * per_page, per_page)
    rows = _rows(session, box, chunk, voucher, several)
    reachable = min(total, REACHABLE) if several else total
    return Results(rows, total, page, per_page, reachable, failed, len(found))


def _page(found: list[tuple[str, list[int]]], dated: dict[tuple[str, int], float],
          start: int, count: int) -> list[tuple[str, int]]:
    """The (folder, UID) pairs of one page, newest first over all the folders."""
    if len(found) == 1:
        name, uids = found[0]
        return [(name, uid) for uid in uids[start:start + count]]
    ranked = [(-dated.get((name, uid), 0.0), order, position, name, uid)
              for order, (name, uids) in enumerate(found)
              for position, uid in enumerate(uids[:start + count])]
    ranked.sort()
    return [(name, uid) for *_key, name, uid in ranked[start:start + count]]


def _rows(session: MailboxSession, box: Any, chunk: list[tuple[str, int]], voucher: Voucher,
          several: bool) -> list[listing.Row]:
    by_folder: dict[str, list[int]] = {}
    for name, uid in chunk:
        by_folder.setdefault(name, []).append(uid)
    rows: dict[tuple[str, int], listing.Row] = {}
    for name, uids in by_folder.items():
        for row in listing.rows(session, box.imap_name(name), uids, voucher):
            rows[(name, row.uid)] = replace(row, folder=name) if several else row
    return [rows[key] for key in chunk if key in rows]


def sent_dates(session: MailboxSession, uids: list[int]) -> dict[int, float]:
    """The sort date of ``uids`` in the selected folder: the Date field, else the arrival
    date (RFC 5256 §2.2, what ``UID SORT (DATE)`` orders by), as POSIX timestamps."""
    if not uids:
        return {}
    raw = imaplib_of(session.client)  # listing's module docstring
    try:
        typ, data = raw.uid("FETCH", ",".join(map(str, uids)),
                            "(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS (DATE)])")
    except raw.error as exc:
        raise ImapError(f"Erreur IMAP : {exc}") from exc
    if typ != "OK":
        raise ImapError("Erreur IMAP : dates refusées")
    found: dict[int, float] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        uid = _UID.search(item[0])
        if uid is not None:
            found[int(uid.group(1))] = _when(item[0], item[1])
    return found


def _when(prefix: bytes, header: bytes) -> float:
    field_ = _DATE_FIELD.search(header)
    if field_ is not None:
        parsed = email.utils.parsedate_tz(field_.group(1).decode("latin-1"))
        if parsed is not None:
            return float(email.utils.mktime_tz(parsed))
    arrived = _INTERNALDATE.search(prefix)
    if arrived is not None:
        try:
            return datetime.strptime(arrived.group(1).decode("ascii").strip(),
                                     "%d-%b-%Y %H:%M:%S %z").timestamp()
        except ValueError:
            pass
    return 0.0


def with_attachment(session: MailboxSession, folder: str, uids: list[int]) -> list[int]:
    """Those of ``uids`` (in ``folder``, IMAP name) that have an attachment, judged from
    their BODYSTRUCTURE as the list's "PJ" marker is (``listing.has_attachment``), in
    batches of 500. (Dovecot's index cannot say: Xapian indexes no Content-Type.)"""
    session.select(folder)
    raw = imaplib_of(session.client)
    kept: set[int] = set()
    for start in range(0, len(uids), 500):
        batch = uids[start:start + 500]
        try:
            typ, data = raw.uid("FETCH", ",".join(map(str, batch)), "(UID BODYSTRUCTURE)")
        except raw.error as exc:
            raise ImapError(f"Erreur IMAP : {exc}") from exc
        if typ != "OK":
            raise ImapError("Erreur IMAP : structure refusée")
        for pieces in listing.messages(data):
            text = b"".join(prefix + literal for prefix, literal in pieces)
            uid = _UID.search(text)
            if uid is not None and listing.has_attachment(text):
                kept.add(int(uid.group(1)))
    return [uid for uid in uids if uid in kept]
