"""Message lists: a page of a folder, newest first, with what the list shows of each message.

Besides what ``MailboxSession.page`` gives (date, sender, recipients, subject, flags, size),
the list marks attachments and the security verdict, so one FETCH asks for the body structure
and our ``Authentication-Results`` field too. Like ``mailstore.imap`` it goes through the
imaplib connection under IMAPClient and parses the header block with the email package:
IMAPClient's own response parser costs more than the round trip (bench/imap_bench.py).
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import decode_header, make_header
from typing import Any

from mailstore.errors import ImapError
from mailstore.imap import MailboxSession
from webmail.mail.badge import verdict_of

FIELDS = "DATE FROM TO CC SUBJECT AUTHENTICATION-RESULTS DISPOSITION-NOTIFICATION-TO"
ITEMS = f"(UID FLAGS RFC822.SIZE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS ({FIELDS})])"
_START = re.compile(rb"^\d+ \(")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
# A body part's disposition in BODYSTRUCTURE (RFC 3501 §7.4.2): ("attachment" (params)).
_ATTACHMENT = re.compile(rb'\("attachment"\s*(\([^)]*\)|NIL)?', re.IGNORECASE)
_HEADERS = email.parser.HeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True)
class Row:
    """One line of a message list."""

    uid: int
    date: datetime | None
    subject: str
    sender: str
    to: tuple[str, ...]
    flags: tuple[str, ...]
    size: int
    attachment: bool
    security: str  # pass / fail / none / temperror / absent (badge.Verdict.result)
    encrypted: bool | None
    folder: str = ""  # set by searches over several folders

    @property
    def seen(self) -> bool:
        return "\\Seen" in self.flags

    @property
    def sender_name(self) -> str:
        """The sender's name, else their address."""
        name, addr = email.utils.parseaddr(self.sender)
        return name or addr or self.sender

    @property
    def to_names(self) -> str:
        return ", ".join(email.utils.parseaddr(t)[0] or email.utils.parseaddr(t)[1] or t
                         for t in self.to)

    @property
    def answered(self) -> bool:
        return "\\Answered" in self.flags


@dataclass(frozen=True)
class Listing:
    rows: list[Row]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def page(session: MailboxSession, folder: str, number: int, per_page: int,
         authserv_id: str) -> Listing:
    """Page ``number`` (from 1) of ``folder`` (IMAP name), newest first."""
    uids = session.sorted_uids(folder)
    pages = max(1, -(-len(uids) // per_page))
    number = min(max(number, 1), pages)
    chunk = uids[(number - 1) * per_page:number * per_page]
    return Listing(rows(session, folder, chunk, authserv_id), len(uids), number, per_page)


def rows(session: MailboxSession, folder: str, uids: Sequence[int], authserv_id: str,
         ) -> list[Row]:
    """The list lines of ``uids`` in ``folder``, in the order given."""
    if not uids:
        return []
    session.select(folder)
    raw = session.client._imap  # the imaplib connection under IMAPClient (module docstring)
    try:
        typ, data = raw.uid("FETCH", ",".join(map(str, uids)), ITEMS)
    except raw.error as exc:
        raise ImapError(f"Erreur IMAP : {exc}") from exc
    if typ != "OK":
        raise ImapError("Erreur IMAP : lecture de la liste refusée")
    found = {row.uid: row for row in _parse(data, authserv_id)}
    return [found[uid] for uid in uids if uid in found]


def _messages(data: Iterable[Any]) -> Iterable[list[tuple[bytes, bytes]]]:
    """Each message of a FETCH response as (text before a literal, literal) pairs; text
    after the last literal comes with an empty literal."""
    pieces: list[tuple[bytes, bytes]] = []
    for item in data:
        head = item[0] if isinstance(item, tuple) else item
        if isinstance(head, bytes) and _START.match(head) and pieces:
            yield pieces
            pieces = []
        if isinstance(item, tuple):
            pieces.append((item[0], item[1]))
        elif isinstance(item, bytes):
            pieces.append((item, b""))
    if pieces:
        yield pieces


def _parse(data: Iterable[Any], authserv_id: str) -> Iterable[Row]:
    for pieces in _messages(data):
        text = b"".join(prefix for prefix, _ in pieces)
        uid = _UID.search(text)
        headers = [lit for prefix, lit in pieces if b"HEADER.FIELDS" in prefix.upper()]
        if uid is None or not headers:
            continue
        structure = text + b"".join(lit for prefix, lit in pieces
                                    if b"HEADER.FIELDS" not in prefix.upper())
        attached = any(b"smime.p7" not in (params or b"").lower()  # not the S/MIME signature
                       for params in _ATTACHMENT.findall(structure))
        yield _row(int(uid.group(1)), text, headers[0], attached, authserv_id)


def _row(uid: int, text: bytes, header_block: bytes, attachment: bool,
         authserv_id: str) -> Row:
    headers = _HEADERS.parsestr(header_block.decode("utf-8", "replace"))
    flags = _FLAGS.search(text)
    size = _SIZE.search(text)
    verdict = verdict_of([str(v) for v in headers.get_all("Authentication-Results", [])],
                         authserv_id)
    to = tuple(display(f"{name} <{addr}>" if name else addr) for name, addr in
               email.utils.getaddresses(headers.get_all("To", []) + headers.get_all("Cc", [])))
    return Row(uid, parse_date(headers["Date"]), display(headers["Subject"]),
               display(headers["From"]), to,
               tuple(f.decode() for f in flags.group(1).split()) if flags else (),
               int(size.group(1)) if size else 0, attachment, verdict.result, verdict.encrypted)


def parse_date(value: str | None) -> datetime | None:
    """A ``Date`` header as an aware datetime, None when absent or unreadable."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def display(value: object) -> str:
    """A header value for display: RFC 2047 words decoded, on one line."""
    text = str(value or "")
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except (ValueError, LookupError):
            pass
    return " ".join(text.split())
