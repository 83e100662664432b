"""Message lists: what a list shows of each message, read over IMAP (the order and the page
are the webmail's ``webmail.mail.listview``).

Date, sender, recipients, subject, flags and size, plus the attachment marker and the security
verdict: one UID FETCH asks for the body structure and our ``Authentication-Results`` field
too. It goes through the imaplib connection under IMAPClient (``mailstore.imap.imaplib_of``)
and cuts the header block with the gateway's parser (``mailformat.headers``): IMAPClient's own
response parser costs more than the round trip (bench/imap_bench.py). The verdict is not
decided here: the caller's ``Voucher`` (the webmail's ``badge.Voucher``) reads it.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email.header import decode_header, make_header
from typing import Any, Protocol

from imapclient import imap_utf7

from mailformat import headers
from mailstore.errors import ImapError
from mailstore.imap import MailboxSession, imaplib_of

FIELDS = ("DATE FROM SENDER TO CC SUBJECT MESSAGE-ID AUTHENTICATION-RESULTS "
          "DISPOSITION-NOTIFICATION-TO")
ITEMS = f"(UID FLAGS RFC822.SIZE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS ({FIELDS})])"
_START = re.compile(rb"^\d+ \(")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
# A body part's disposition in BODYSTRUCTURE (RFC 3501 §7.4.2): ("attachment" (params)).
_ATTACHMENT = re.compile(rb'\("attachment"\s*(\([^)]*\)|NIL)?', re.IGNORECASE)
_LIST = re.compile(rb'^\(([^)]*)\) (?:"[^"]*"|NIL) (.+)$')
_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)\s+(=\?)")
_FOLD = re.compile(r"\r?\n[ \t]+")
_NAME_ADDR = re.compile(r"^\s*(.*?)\s*<([^<>]*)>\s*$")


class Verdict(Protocol):
    """What a list line shows of the security verdict."""

    @property
    def result(self) -> str: ...  # pass / fail / none / temperror / absent / forged / report

    @property
    def encrypted(self) -> bool | None: ...


class Voucher(Protocol):
    """Reads the gateway's verdict from a message's header section (the webmail's
    ``badge.Voucher``: our authserv-id and the seal key)."""

    def verdict(self, header: headers.Header) -> tuple[Verdict, datetime | None]:
        """The verdict and the gateway's time (None when it sealed none)."""
        ...


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
    security: str  # pass / fail / none / temperror / absent (Verdict.result)
    encrypted: bool | None
    folder: str = ""  # set by searches over several folders
    sender_name: str = ""  # the sender's name, else their address (see ``sender_label``)
    sender_address: str = ""  # the address of the From field, lower case
    from_name: str = ""  # the display name of the From field, decoded
    to_names: str = ""  # the recipients' names (or addresses)

    @property
    def seen(self) -> bool:
        return "\\Seen" in self.flags

    @property
    def answered(self) -> bool:
        return "\\Answered" in self.flags

    @property
    def flagged(self) -> bool:
        """Followed ("suivi"): IMAP \\Flagged (RFC 9051 §2.3.2)."""
        return "\\Flagged" in self.flags


@dataclass(frozen=True)
class Listing:
    rows: list[Row]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True)
class FolderCount:
    name: str  # IMAP name
    messages: int
    unseen: int


def folder_counts(session: MailboxSession) -> list[FolderCount]:
    """Selectable folders with message and unseen counts in one round trip: LIST with
    RETURN (STATUS …) (RFC 5819), where ``MailboxSession.folders`` asks STATUS per folder."""
    if not session.client.has_capability("LIST-STATUS"):
        return [FolderCount(f.name, f.messages, f.unseen) for f in session.folders()]
    raw = imaplib_of(session.client)  # IMAPClient's list_folders has no RETURN options
    try:
        typ, listed = raw.list('""', '"*" RETURN (STATUS (MESSAGES UNSEEN))')
    except raw.error as exc:
        raise ImapError(f"Erreur IMAP : {exc}") from exc
    statuses = raw.untagged_responses.pop("STATUS", [])
    if typ != "OK":
        raise ImapError("Erreur IMAP : liste des dossiers refusée")
    counts = dict(_status(item) for item in _joined(statuses))
    found = []
    for item in _joined(listed):
        flags, name = _list_entry(item)
        if b"\\noselect" not in flags and b"\\nonexistent" not in flags and name in counts:
            found.append(FolderCount(name, *counts[name]))
    return found


def _joined(items: Iterable[Any]) -> Iterable[bytes]:
    """imaplib's untagged lines, a literal (a name with odd characters) put back quoted."""
    for item in items:
        if isinstance(item, tuple):
            yield item[0].rsplit(b"{", 1)[0] + b'"' + item[1].replace(b'"', b'\\"') + b'"'
        elif isinstance(item, bytes):
            yield item


def _name(token: bytes) -> str:
    token = token.strip()
    if token.startswith(b'"') and token.endswith(b'"'):
        token = token[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
    return imap_utf7.decode(token)


def _list_entry(line: bytes) -> tuple[bytes, str]:
    found = _LIST.match(line)
    if found is None:
        return b"\\noselect", ""
    return found.group(1).lower(), _name(found.group(2))


def _status(line: bytes) -> tuple[str, tuple[int, int]]:
    name, _, rest = line.rpartition(b" (")
    values = dict(zip(rest.rstrip(b")").split()[::2], rest.rstrip(b")").split()[1::2],
                      strict=False))
    return _name(name), (int(values.get(b"MESSAGES", 0)), int(values.get(b"UNSEEN", 0)))


def rows(session: MailboxSession, folder: str, uids: Sequence[int], voucher: Voucher,
         ) -> list[Row]:
    """The list lines of ``uids`` in ``folder``, in the order given."""
    if not uids:
        return []
    session.select(folder)
    raw = imaplib_of(session.client)  # module docstring
    try:
        typ, data = raw.uid("FETCH", ",".join(map(str, uids)), ITEMS)
    except raw.error as exc:
        raise ImapError(f"Erreur IMAP : {exc}") from exc
    if typ != "OK":
        raise ImapError("Erreur IMAP : lecture de la liste refusée")
    found = {row.uid: row for row in _parse(data, voucher)}
    return [found[uid] for uid in uids if uid in found]


def messages(data: Iterable[Any]) -> Iterable[list[tuple[bytes, bytes]]]:
    """Each message of imaplib's answer to a FETCH as (text before a literal, literal) pairs;
    text after the last literal comes with an empty literal."""
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


def _parse(data: Iterable[Any], voucher: Voucher) -> Iterable[Row]:
    for pieces in messages(data):
        text = b"".join(prefix for prefix, _ in pieces)
        uid = _UID.search(text)
        blocks = [lit for prefix, lit in pieces if b"HEADER.FIELDS" in prefix.upper()]
        if uid is None or not blocks:
            continue
        structure = text + b"".join(lit for prefix, lit in pieces
                                    if b"HEADER.FIELDS" not in prefix.upper())
        yield _row(int(uid.group(1)), text, blocks[0], has_attachment(structure), voucher)


def uid_of(text: bytes) -> int | None:
    """The UID in a FETCH answer's text, None without one."""
    found = _UID.search(text)
    return int(found.group(1)) if found else None


def has_attachment(structure: bytes) -> bool:
    """Whether a FETCH answer's BODYSTRUCTURE shows a part with disposition "attachment"
    other than an S/MIME signature: the list's "PJ" marker and its "Avec pièces jointes"
    filter (``listview``) both ask this."""
    return any(b"smime.p7" not in (params or b"").lower()
               for params in _ATTACHMENT.findall(structure))


def _row(uid: int, text: bytes, header_block: bytes, attachment: bool,
         voucher: Voucher) -> Row:
    header = headers.parse(header_block)  # the gateway's parser (CONVENTIONS.md, 13)
    fields = {n: header.values(n) for n in ("date", "from", "to", "cc", "subject")}
    flags = _FLAGS.search(text)
    size = _SIZE.search(text)
    verdict, _at = voucher.verdict(header)
    name, address = (email.utils.getaddresses(fields["from"]) or [("", "")])[0]
    name, address = display(name), address.lower()
    sender = f"{name} <{address}>" if name else address
    people = [_person(a) for v in fields.get("to", []) + fields.get("cc", [])
              for a in _addresses(v)]
    return Row(uid, parse_date((fields.get("date") or [""])[0]),
               display((fields.get("subject") or [""])[0]), sender,
               tuple(f"{n} <{a}>" if n else a for n, a in people),
               tuple(f.decode() for f in flags.group(1).split()) if flags else (),
               int(size.group(1)) if size else 0, attachment, verdict.result, verdict.encrypted,
               sender_name=sender_label(name, address, {}), sender_address=address,
               from_name=name,
               to_names=", ".join(n or a for n, a in people))


def sender_label(name: str, address: str, directory: Mapping[str, str]) -> str:
    """What the list shows of a sender: the name, unless it could mislead (issue #14 item 7).
    A name that holds an address (``"Paul <paul@…>" <marie@…>``) gives way to the real
    address; a name other than the directory's for that address is followed by it."""
    if not name or "@" in name:
        return address or name
    known = directory.get(address)
    if known is not None and _folded(known) != _folded(name):
        return f"{name} <{address}>"
    return name


def _folded(name: str) -> str:
    """A name compared without case, accents, punctuation or spacing differences."""
    plain = unicodedata.normalize("NFKD", name.casefold())
    return "".join(c for c in plain if c.isalnum())


def with_directory_names(found: Sequence[Row], names: Callable[[set[str]], Mapping[str, str]],
                         ) -> list[Row]:
    """``found`` with each sender shown against the directory's name for its address
    (``names``: address → display name, one query for the page)."""
    directory = names({r.sender_address for r in found if r.sender_address})
    return [replace(r, sender_name=sender_label(r.from_name, r.sender_address,
                                                directory)) for r in found]


def _addresses(value: str) -> list[str]:
    """The addresses of an address-list field, for display."""
    if '"' in value or "(" in value:
        return [f"{n} <{a}>" if n else a for n, a in email.utils.getaddresses([value])]
    return [part.strip() for part in value.split(",") if part.strip()]


def _person(value: str) -> tuple[str, str]:
    """(display name, address) of ``Name <address>`` or a bare address."""
    found = _NAME_ADDR.match(value)
    if found:
        return display(found.group(1).strip().strip('"')), found.group(2).strip()
    return "", value.strip()


def _decode_words(text: str) -> str:
    """RFC 2047 encoded words decoded (white space between two of them dropped, §6.2):
    the common case of every subject and name, faster than ``email.header``."""
    text = _BETWEEN_WORDS.sub(r"\1\2", text)

    def word(found: re.Match[str]) -> str:
        charset, encoding, data = found.group(1), found.group(2).upper(), found.group(3)
        if encoding == "B":
            raw = base64.b64decode(data + "=" * (-len(data) % 4))
        else:
            raw = binascii.a2b_qp(data.replace("_", " ").encode("ascii"))
        return raw.decode(charset.split("*", 1)[0], "replace")

    return _WORD.sub(word, text)


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
            text = _decode_words(text)
        except (ValueError, LookupError, binascii.Error):
            try:
                text = str(make_header(decode_header(text)))
            except (ValueError, LookupError):
                pass
    return " ".join(text.split())
