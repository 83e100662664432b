"""What a message list shows: the view the URL asks for (sort, direction, filter, page) and
the UIDs of that view, computed by the IMAP server.

- Sorting is UID SORT (RFC 5256) on the key of the chosen column: DATE, DISPLAYFROM /
  DISPLAYTO (RFC 5957, the name as the list shows it; FROM / TO without SORT=DISPLAY),
  SUBJECT, SIZE. Without SORT the order is the arrival order (UID SEARCH, RFC 3501 §2.3.1.1:
  UIDs grow with arrival), whatever the column. RFC 5256 §3 breaks ties by ascending sequence
  number whatever the direction, so a descending view is the ascending answer reversed: of
  two messages of the same second, the later arrival comes first.
- "Non lus" and "suivis" are SEARCH criteria (UNSEEN, FLAGGED) of the same SORT command.
- "Avec pièces jointes" has no IMAP criterion (Dovecot 2.3 has none either). The
  BODYSTRUCTURE of the folder's messages (which Dovecot keeps in its cache: the list fetches it
  for every row anyway) is read in bounded batches and judged by the predicate the list's "PJ"
  marker uses (``listing.has_attachment``), so the filter and the marker never disagree. A
  message never changes under its UID (RFC 3501 §2.3.1.1), so each is judged once per session
  and UIDVALIDITY; later visits judge only what arrived since (UIDs from the last UIDNEXT).
  Not chosen: narrowing by ``HEADER Content-Type "multipart/"`` first — under the full-text
  index (``mailstore.fts``, ``fts_enforced``) a header search Xapian does not index matches
  nothing, and in MSSanté nearly every message is multipart/signed anyway; Dovecot's
  ``mail_attachment_detection_options = add-flags`` ($HasAttachment, searchable) judges by
  its own rules, not the marker's, and only mail stored after it is turned on.

Every string sent to the server here comes from the tables below, never from the request.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from imapclient.exceptions import IMAPClientError

from mailstore import listing
from mailstore.errors import ImapError
from mailstore.imap import MailboxSession, imaplib_of

# URL value -> (IMAP sort key, with SORT=DISPLAY; without it), French label, first direction.
SORTS: dict[str, tuple[str, str, str, bool]] = {
    "date": ("DATE", "DATE", "Date", True),
    "expediteur": ("DISPLAYFROM", "FROM", "Expéditeur", False),
    "destinataire": ("DISPLAYTO", "TO", "Destinataires", False),
    "objet": ("SUBJECT", "SUBJECT", "Objet", False),
    "taille": ("SIZE", "SIZE", "Taille", True),
}
FILTERS: dict[str, tuple[str, str]] = {  # URL value -> (SEARCH criteria, French label)
    "tous": ("ALL", "Tous"),
    "non-lus": ("UNSEEN", "Non lus"),
    "suivis": ("FLAGGED", "Suivis"),
    "pj": ("ALL", "Avec pièces jointes"),
}
PAGE_SIZES = (25, 50, 100)
BATCH = 500  # UIDs per FETCH or STORE/MOVE command: bounded commands, bounded answers
_STATUS = (b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES", b"HIGHESTMODSEQ")  # snapshot


@dataclass(frozen=True)
class View:
    """The list as the URL asks for it (``tri``, ``ordre``, ``filtre``, ``page``); anything
    else in those parameters gives the default view, never an error."""

    sort: str = "date"
    descending: bool = True
    filter: str = "tous"
    page: int = 1

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> View:
        sort = values.get("tri", "date")
        sort = sort if sort in SORTS else "date"
        order = values.get("ordre", "")
        descending = {"decroissant": True, "croissant": False}.get(order, SORTS[sort][3])
        kind = values.get("filtre", "tous")
        raw = values.get("page", "1")
        page = int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 100_000 else 1
        return cls(sort, descending, kind if kind in FILTERS else "tous", page)

    @property
    def default_order(self) -> bool:
        return self.descending == SORTS[self.sort][3]

    def args(self, **changes: Any) -> dict[str, str]:
        """The view's URL parameters, defaults left out (``changes``: ``sort=``…)."""
        view = replace(self, **changes)
        found = {}
        if view.sort != "date":
            found["tri"] = view.sort
        if not view.default_order:
            found["ordre"] = "decroissant" if view.descending else "croissant"
        if view.filter != "tous":
            found["filtre"] = view.filter
        if view.page > 1:
            found["page"] = str(view.page)
        return found

    def query(self, **changes: Any) -> str:
        """``args`` as ``&tri=…&…`` to append to a URL that already has ``?dossier=``."""
        found = self.args(**changes)
        return ("&" + urlencode(found)) if found else ""

    def header(self, sort: str) -> dict[str, str]:
        """The parameters of a column header's link: that sort, in its first direction, or
        the other direction when it is the current one; back to page 1."""
        if sort == self.sort:
            return self.args(descending=not self.descending, page=1)
        return self.args(sort=sort, descending=SORTS[sort][3], page=1)

    @property
    def aria_sort(self) -> str:
        return "descending" if self.descending else "ascending"


@dataclass(frozen=True)
class Snapshot:
    """A folder's state (RFC 3501 STATUS; HIGHESTMODSEQ RFC 7162 §3.1.6, changed by every
    flag change): a cached order stays valid while it is the same."""

    uidvalidity: int
    uidnext: int
    messages: int
    modseq: int


# Per pooled session (used by one request at a time): orders and attachment verdicts.
_ORDERS: weakref.WeakKeyDictionary[MailboxSession, dict[tuple[str, str, str], tuple[
    Snapshot, list[int]]]] = weakref.WeakKeyDictionary()
_JUDGED: weakref.WeakKeyDictionary[MailboxSession, dict[str, tuple[int, int, set[int]]]] = \
    weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def snapshot(session: MailboxSession, folder: str) -> Snapshot | None:
    """The state of ``folder`` (selected and synchronised first), None if not said."""
    session.select(folder)
    session.noop()  # the selected view first: STATUS alone may describe a stale one
    try:
        found = session.client.folder_status(folder, _STATUS)
    except IMAPClientError:  # imaplib's error (IMAPClient's name for it): a refusal or the end
        return None
    if any(key not in found for key in _STATUS[:3]):
        return None
    return Snapshot(int(found[b"UIDVALIDITY"]), int(found[b"UIDNEXT"]),
                    int(found[b"MESSAGES"]), int(found.get(b"HIGHESTMODSEQ", 0)))


def view_uids(session: MailboxSession, folder: str, view: View, *, sent: bool = False,
              state: Snapshot | None = None) -> list[int]:
    """Every UID of ``folder`` (IMAP name) in ``view``'s filter and order (its page aside).
    ``sent``: the "who" column shows recipients. ``state``: the folder's ``snapshot``."""
    state = state or snapshot(session, folder)
    sort = "destinataire" if sent and view.sort == "expediteur" else view.sort
    display, plain = SORTS[sort][:2]
    key = display if session.client.has_capability("SORT=DISPLAY") else plain
    criteria = FILTERS[view.filter][0]
    cache_key = (folder, key, criteria)
    # Unfiltered orders do not depend on flags: a message read keeps the cached order.
    valid = state if criteria != "ALL" else replace(state, modseq=0) if state else None
    with _LOCK:
        cached = _ORDERS.setdefault(session, {}).get(cache_key)
    if cached is not None and valid is not None and cached[0] == valid:
        uids = cached[1]
    else:
        uids = _ordered(session, key, criteria)
        if valid is not None:
            with _LOCK:
                _ORDERS.setdefault(session, {})[cache_key] = (valid, uids)
    if view.filter == "pj":
        attached = attachment_uids(session, folder, state)
        uids = [uid for uid in uids if uid in attached]
    return uids[::-1] if view.descending else list(uids)


def _ordered(session: MailboxSession, key: str, criteria: str) -> list[int]:
    """Ascending UIDs matching ``criteria`` by ``key``: UID SORT, else arrival order."""
    raw = imaplib_of(session.client)  # IMAPClient's parser of long answers: threads._command
    try:
        if session.client.has_capability("SORT"):
            typ, data = raw.uid("SORT", f"({key})", "UTF-8", criteria)
        else:
            typ, data = raw.uid("SEARCH", criteria)
    except raw.error as exc:
        raise ImapError(f"Erreur IMAP : {exc}") from exc
    if typ != "OK":
        raise ImapError("Erreur IMAP : tri refusé")
    return [int(n) for n in b" ".join(d for d in data if d).split()]


def search_uids(session: MailboxSession, criteria: str) -> list[int]:
    """UIDs (ascending) of the selected folder matching ``criteria`` (built here)."""
    raw = imaplib_of(session.client)  # IMAPClient's parser of long answers: threads._command
    try:
        typ, data = raw.uid("SEARCH", criteria)
    except raw.error as exc:
        raise ImapError(f"Erreur IMAP : {exc}") from exc
    if typ != "OK":
        raise ImapError("Erreur IMAP : recherche refusée")
    return sorted(int(n) for n in b" ".join(d for d in data if d).split())


def attachment_uids(session: MailboxSession, folder: str, state: Snapshot | None) -> set[int]:
    """The UIDs of ``folder`` whose body structure shows an attachment (module docstring)."""
    with _LOCK:
        known = _JUDGED.setdefault(session, {}).get(folder)
    if state is None or known is None or known[0] != state.uidvalidity:
        known = (state.uidvalidity if state else 0, 1, set())
    validity, start, attached = known
    session.select(folder)
    fresh = [uid for uid in search_uids(session, f"UID {start}:*") if uid >= start]
    for chunk in batches(fresh):
        attached |= _judge(session, chunk)
    if state is not None:
        with _LOCK:
            _JUDGED.setdefault(session, {})[folder] = (validity, state.uidnext, attached)
    return attached


def _judge(session: MailboxSession, uids: Sequence[int]) -> set[int]:
    raw = imaplib_of(session.client)  # IMAPClient's parser of long answers: threads._command
    try:
        typ, data = raw.uid("FETCH", uid_set(uids), "(UID BODYSTRUCTURE)")
    except raw.error as exc:
        raise ImapError(f"Erreur IMAP : {exc}") from exc
    if typ != "OK":
        raise ImapError("Erreur IMAP : lecture des structures refusée")
    found = set()
    for pieces in listing.messages(data):
        # Joined as the list's rows join theirs (``listing._parse``): the same verdict.
        text = b"".join(p for p, _ in pieces) + b"".join(lit for _, lit in pieces)
        uid = listing.uid_of(text)
        if uid is not None and listing.has_attachment(text):
            found.add(uid)
    return found


def batches(uids: Sequence[int], size: int | None = None) -> Iterable[list[int]]:
    """``uids`` in slices of at most ``size`` (``BATCH``)."""
    size = size or BATCH
    for start in range(0, len(uids), size):
        yield list(uids[start:start + size])


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set of ``uids`` with runs as ranges (``1:5,9,12:14``)."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def present(session: MailboxSession, folder: str, uids: Sequence[int]) -> list[int]:
    """Those of ``uids`` still in ``folder`` (a second click finds them gone)."""
    if not uids:
        return []
    session.select(folder)
    session.noop()
    found = set()
    for chunk in batches(list(uids)):
        found.update(search_uids(session, f"UID {uid_set(chunk)}"))
    return [uid for uid in uids if uid in found]


def neighbours(uids: Sequence[int], uid: int) -> tuple[int | None, int | None, int]:
    """(previous, next, index) of ``uid`` in a view's order; index -1 when absent."""
    try:
        index = list(uids).index(uid)
    except ValueError:
        return None, None, -1
    before = uids[index - 1] if index > 0 else None
    after = uids[index + 1] if index + 1 < len(uids) else None
    return before, after, index
