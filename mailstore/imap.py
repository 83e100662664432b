"""The webmail's IMAP client layer, on IMAPClient (synchronous, like the Flask webmail).

A ``MailboxSession`` is one logged-in IMAP connection for one user, with the operations the
mail views need: folders with unread counts, UIDs newest first (server-side SORT), one message
raw and parsed, flags, move, expunge, append, search, quota. Every message is addressed by
UID. ``mailstore.pool.ImapPool`` hands sessions out and keeps them open between page views;
what a message list shows of each message is ``mailstore.listing``'s.

Organisational mailboxes are folders of the shared namespace: ``shared_folder(address)`` gives
``shared/<address>/INBOX`` and the same operations apply, within the delegate's rights.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import imaplib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from typing import Any, cast

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailformat import headers
from mailstore.config import SEPARATOR, SHARED_PREFIX
from mailstore.errors import ImapError, MailboxNotFound

_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")


def imaplib_of(client: IMAPClient) -> imaplib.IMAP4:
    """The imaplib connection IMAPClient drives, for the commands whose raw answer is read
    here: LIST … RETURN (STATUS …) (RFC 5819), which IMAPClient has no call for, and the
    FETCH, SORT, SEARCH and GETQUOTAROOT answers of the list views, which IMAPClient's
    response parser takes longer to read than the server to send (bench/imap_bench.py).

    IMAPClient 4.1.0 (requirements.lock) keeps it in the private attribute ``_imap`` and has
    no public accessor: this is the one place that reads it, and
    ``tests/test_mailstore_client.py::test_imaplib_under_imapclient`` fails if it changes.
    """
    return cast(imaplib.IMAP4, client._imap)


def shared_folder(address: str, folder: str = "INBOX") -> str:
    """The name of an organisational mailbox's folder in the delegate's session."""
    return f"{SHARED_PREFIX}{address.lower()}{SEPARATOR}{folder}"


@dataclass(frozen=True)
class Folder:
    name: str
    special_use: str | None  # "\\Sent", "\\Drafts", "\\Trash" or None
    messages: int
    unseen: int


@dataclass(frozen=True)
class Message:
    uid: int
    raw: bytes
    flags: tuple[str, ...]

    @property
    def parsed(self) -> EmailMessage:
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass(frozen=True)
class Quota:
    used_kb: int
    limit_kb: int | None

    @property
    def percent(self) -> float | None:
        return None if not self.limit_kb else 100.0 * self.used_kb / self.limit_kb


class MailboxSession:
    """One logged-in IMAP connection (not thread-safe: one request at a time)."""

    def __init__(self, client: IMAPClient, user: str) -> None:
        self.client = client
        self.user = user
        self._selected: str | None = None

    # ------------------------------------------------------------------ folders
    def listed(self, folder: str) -> bool:
        """Whether LIST shows ``folder`` as one that can be selected (INBOX always is)."""
        answer = self._call(self.client.list_folders, "", folder)
        return any(b"\\Noselect" not in flags and b"\\NonExistent" not in flags
                   for flags, _delim, _name in answer)

    def folders(self) -> list[Folder]:
        """Selectable folders with message and unseen counts (INBOX first)."""
        result = []
        for flags, _delim, name in self._call(self.client.list_folders):
            if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                continue
            status = self._call(self.client.folder_status, name, [b"MESSAGES", b"UNSEEN"])
            special = next((f.decode() for f in flags
                            if f in (b"\\Sent", b"\\Drafts", b"\\Trash", b"\\Junk")), None)
            result.append(Folder(name, special, status[b"MESSAGES"], status[b"UNSEEN"]))
        return sorted(result, key=lambda f: (f.name != "INBOX", f.name))

    def select(self, folder: str) -> None:
        """Select ``folder`` read-write (skipped when it already is)."""
        if self._selected == folder:
            return
        try:
            self.client.select_folder(folder)
        except IMAPClientError as exc:
            self._selected = None
            raise MailboxNotFound(f"Dossier introuvable : « {folder} »") from exc
        self._selected = folder

    # ------------------------------------------------------------------ reading
    def sorted_uids(self, folder: str, criteria: Sequence[Any] = ("ALL",)) -> list[int]:
        """UIDs matching ``criteria``, newest first (SORT DATE reversed, RFC 5256), the
        later arrival first among messages of the same second."""
        self.select(folder)
        if self.client.has_capability("SORT"):
            # Ascending then reversed: RFC 5256 §3 breaks ties by increasing sequence
            # number even under REVERSE DATE (mail of the same second came oldest first).
            return list(reversed(self._call(self.client.sort, ["DATE"], list(criteria))))
        uids = self._call(self.client.search, list(criteria))
        return sorted(uids, reverse=True)

    def message(self, folder: str, uid: int, *, mark_seen: bool = True) -> Message:
        """One message, raw (and ``parsed``); reading it marks it seen unless told not to."""
        self.select(folder)
        item = b"BODY[]" if mark_seen else b"BODY.PEEK[]"
        data = self._call(self.client.fetch, [uid], [item, b"FLAGS"]).get(uid)
        if not data or b"BODY[]" not in data:
            raise MailboxNotFound(f"Message introuvable (UID {uid})")
        flags = _flags(data.get(b"FLAGS", ()))
        if mark_seen and "\\Seen" not in flags:
            flags = (*flags, "\\Seen")
        return Message(uid, data[b"BODY[]"], flags)

    def search(self, folder: str, *, text: str | None = None, sender: str | None = None,
               since: date | None = None, before: date | None = None,
               unseen: bool = False) -> list[int]:
        """UIDs of the messages matching every given criterion, newest first. Dates are the
        messages' ``Date`` (SENTSINCE/SENTBEFORE, the date the list is sorted and shown by)."""
        criteria: list[Any] = []
        if text:
            criteria += ["TEXT", text]
        if sender:
            criteria += ["FROM", sender]
        if since:
            criteria += ["SENTSINCE", since]
        if before:
            criteria += ["SENTBEFORE", before]
        if unseen:
            criteria.append("UNSEEN")
        return self.sorted_uids(folder, criteria or ["ALL"])

    def uids_with_header(self, folder: str, name: str, value: str, *,
                         since: date | None = None) -> list[int]:
        """UIDs of the messages (arrived ``since`` that day, if given) whose ``name`` field is
        exactly ``value``. Read from the fields themselves, not SEARCH HEADER: full-text search
        (fts_enforced) would answer it, and cuts long values into terms."""
        self.select(folder)
        uids = self._call(self.client.search, ["SINCE", since] if since else ["ALL"])
        if not uids:
            return []
        item = f"BODY.PEEK[HEADER.FIELDS ({name.upper()})]"
        answer = self._call(self.client.fetch, uids, [item])
        found = []
        for uid, data in answer.items():
            block = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"")
            # the gateway's parser (CONVENTIONS.md, 13): what it checked is what is compared
            if any(v.strip() == value for v in headers.parse(bytes(block or b"")).values(name)):
                found.append(int(uid))
        return sorted(found)

    # ------------------------------------------------------------------ changing
    def set_flags(self, folder: str, uids: Iterable[int], flags: Iterable[str]) -> None:
        self.select(folder)
        self._call(self.client.add_flags, list(uids), list(flags), silent=True)

    def clear_flags(self, folder: str, uids: Iterable[int], flags: Iterable[str]) -> None:
        self.select(folder)
        self._call(self.client.remove_flags, list(uids), list(flags), silent=True)

    def move(self, folder: str, uids: Iterable[int], destination: str) -> None:
        """MOVE (RFC 6851) to another folder, e.g. the Trash."""
        self.select(folder)
        self._call(self.client.move, list(uids), destination)

    def expunge(self, folder: str, uids: Iterable[int]) -> None:
        """Delete for good: \\Deleted then UID EXPUNGE of just these messages (RFC 4315).

        Raises:
            ImapError: the user may not delete here (e.g. a ``user`` delegate).
        """
        self.select(folder)
        wanted = list(uids)
        self._call(self.client.add_flags, wanted, [b"\\Deleted"], silent=True)
        self._call(self.client.uid_expunge, wanted)
        left = self._call(self.client.fetch, wanted, [b"FLAGS"])
        if left:
            raise ImapError("Suppression refusée : droits insuffisants sur ce dossier")

    def append(self, folder: str, raw: bytes, flags: Iterable[str] = (),
               when: datetime | None = None) -> int | None:
        """Store a message (a draft, a copy); its UID when the server says (UIDPLUS)."""
        reply = self._call(self.client.append, folder, raw, list(flags), when)
        found = _APPENDUID.search(reply if isinstance(reply, bytes) else b"")
        return int(found.group(1)) if found else None

    # ------------------------------------------------------------------ misc
    def quota(self) -> Quota:
        """Storage used and allowed for the user's own mailbox (RFC 2087)."""
        _roots, quotas = self._call(self.client.get_quota_root, "INBOX")
        for q in quotas:
            if q.resource.upper() == "STORAGE":
                return Quota(int(q.usage), int(q.limit))
        return Quota(0, None)

    def noop(self) -> None:
        self._call(self.client.noop)

    def forget_responses(self) -> None:
        """Drop what imaplib kept that no command read: the response codes of tagged answers
        (Dovecot's ``[CLIENTBUG]`` on each STATUS of the selected folder, which the sidebar's
        counts ask) and unsolicited EXISTS, RECENT, FETCH… imaplib appends them to lists only
        a SELECT empties, and a pooled session stays selected: a user's session grew with each
        page for as long as it was in use (issue 19). Called between two borrowings
        (``mailstore.pool``), when no command is waiting for any of them."""
        imaplib_of(self.client).untagged_responses.clear()

    def logout(self) -> None:
        """LOGOUT, then the socket closed; on a connection the server already ended (a
        kicked session, a dead Dovecot) imaplib raises before closing its socket, so it is
        closed here."""
        try:
            self.client.logout()
        except (IMAPClientError, OSError):
            with contextlib.suppress(IMAPClientError, OSError):
                self.client.shutdown()

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except IMAPClientError as exc:
            raise ImapError(f"Erreur IMAP : {exc}") from exc


def _flags(raw: Iterable[bytes | str]) -> tuple[str, ...]:
    return tuple(f.decode() if isinstance(f, bytes) else f for f in raw)
