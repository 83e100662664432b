"""Conversations: a folder's messages grouped by thread, one line per conversation.

Dovecot threads a folder itself (RFC 5256 ``THREAD``): ``REFS`` when it offers it (Dovecot's
own algorithm: ``References``/``In-Reply-To`` only, no grouping by subject, so two unrelated
"Compte rendu" messages stay apart), else ``REFERENCES`` (RFC 5256 §2.2), else every message
is its own conversation. The server's answer is a tree; a conversation here is the set of its
UIDs, ordered by ``Date`` (UID SORT, RFC 5256, as the flat list's default order), so the
list and the conversation agree with the flat list on what is "latest". Conversations are
sorted by their latest message, newest first, whatever the flat list's sort.

Nothing here reads a body: the list line of a conversation is the list line of its latest
message (``listing.rows``) plus, for every message of the page's conversations, its flags and
``From`` (who took part, how many are unread).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from mailformat import headers
from mailstore import listing
from mailstore.errors import ImapError, MailboxNotFound
from mailstore.imap import MailboxSession, imaplib_of
from webmail.mail.badge import Voucher

ALGORITHMS = ("REFS", "REFERENCES")  # preferred first (module docstring)
MAX_SHOWN = 50  # messages of one conversation shown on its page (the newest)
MAX_CANDIDATES = 2000  # Sent messages looked at for the person's own replies, at most
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MSGID = re.compile(r"<[^<>\s\"]{1,250}>")
_TOKEN = re.compile(rb"[()]|\d+")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_NAME_ADDR = re.compile(r"^\s*(.*?)\s*<([^<>]*)>\s*$")


@dataclass(frozen=True)
class Conversation:
    """One line of the conversation list."""

    uids: tuple[int, ...]  # oldest first
    latest: listing.Row  # the list line of the newest message
    participants: tuple[tuple[str, str], ...]  # senders (name, address), first to write first
    unread: int

    @property
    def count(self) -> int:
        return len(self.uids)

    @property
    def seen(self) -> bool:
        return self.unread == 0


@dataclass(frozen=True)
class ConversationPage:
    conversations: list[Conversation]
    total: int  # conversations in the folder
    messages: int  # messages in the folder
    page: int
    per_page: int
    algorithm: str | None  # None: the server threads nothing, one message per line

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def algorithm(session: MailboxSession) -> str | None:
    """The threading algorithm to ask for, None when the server offers none we use."""
    return next((name for name in ALGORITHMS
                 if session.client.has_capability(f"THREAD={name}")), None)


def parse_threads(answer: bytes) -> list[list[int]]:
    """The UIDs of each top-level thread of a ``THREAD`` answer (RFC 5256 §4), in the order
    they appear; a missing parent (``((3)(5))``) leaves its children in one thread.

    Raises:
        ImapError: unbalanced parentheses (not a thread answer).
    """
    found: list[list[int]] = []
    depth = 0
    for token in _TOKEN.findall(answer):
        if token == b"(":
            if depth == 0:
                found.append([])
            depth += 1
        elif token == b")":
            depth -= 1
            if depth < 0:
                raise ImapError("Erreur IMAP : réponse THREAD illisible")
        elif depth > 0:
            found[-1].append(int(token))
    if depth != 0:
        raise ImapError("Erreur IMAP : réponse THREAD illisible")
    return [t for t in found if t]


def threads(session: MailboxSession, folder: str, using: str | None) -> list[list[int]]:
    """Every thread of ``folder`` (IMAP name) as UIDs; one per message without ``using``."""
    if using is None:
        return [[uid] for uid in newest_first(session, folder)]
    return parse_threads(_command(session, folder, "THREAD", using, "UTF-8", "ALL"))


def newest_first(session: MailboxSession, folder: str) -> list[int]:
    """Every UID of ``folder``, newest ``Date`` first (arrival order without SORT). Ascending
    then reversed: RFC 5256 §3 breaks ties by ascending sequence number in either direction,
    so of two messages of the same second the later arrival comes first."""
    if not session.client.has_capability("SORT"):
        return [int(n) for n in _command(session, folder, "SEARCH", "ALL").split()][::-1]
    return [int(n) for n in _command(session, folder, "SORT", "(DATE)", "UTF-8",
                                     "ALL").split()][::-1]


def _command(session: MailboxSession, folder: str, *args: str) -> bytes:
    """A UID command's untagged answer, through imaplib under IMAPClient (whose parser of a
    10,000-number answer costs more than the server's work, bench/imap_bench.py)."""
    session.select(folder)
    raw = imaplib_of(session.client)
    try:
        typ, data = raw.uid(*args)
    except raw.error as exc:
        raise ImapError(f"Erreur IMAP : {exc}") from exc
    if typ != "OK":
        raise ImapError(f"Erreur IMAP : {args[0]} refusé")
    return b" ".join(d for d in data if isinstance(d, bytes))


def ordered(found: list[list[int]], newest: Sequence[int]) -> list[tuple[int, ...]]:
    """Conversations newest first, each oldest first, by the folder's order ``newest``
    (newest first); UIDs the order does not know (arrived in between) are left out."""
    rank = {uid: index for index, uid in enumerate(newest)}
    kept = [sorted((u for u in thread if u in rank), key=rank.__getitem__, reverse=True)
            for thread in found]
    kept = [t for t in kept if t]
    kept.sort(key=lambda t: rank[t[-1]])
    return [tuple(t) for t in kept]


def page(session: MailboxSession, folder: str, number: int, per_page: int,
         voucher: Voucher) -> ConversationPage:
    """Page ``number`` (from 1) of the conversations of ``folder`` (IMAP name)."""
    using = algorithm(session)
    newest = newest_first(session, folder)
    conversations = ordered(threads(session, folder, using), newest)
    pages = max(1, -(-len(conversations) // per_page))
    number = min(max(number, 1), pages)
    chunk = conversations[(number - 1) * per_page:number * per_page]
    latest = {r.uid: r for r in listing.rows(session, folder, [c[-1] for c in chunk], voucher)}
    senders = _senders(session, folder, [u for c in chunk for u in c])
    lines = [_line(c, latest[c[-1]], senders) for c in chunk if c[-1] in latest]
    return ConversationPage(lines, len(conversations), len(newest), number, per_page, using)


def conversation_of(session: MailboxSession, folder: str, uid: int) -> tuple[int, ...]:
    """The UIDs of the conversation ``uid`` belongs to, oldest first.

    Raises:
        MailboxNotFound: no message ``uid`` in ``folder``.
    """
    newest = newest_first(session, folder)
    for found in ordered(threads(session, folder, algorithm(session)), newest):
        if uid in found:
            return found
    raise MailboxNotFound(f"Message introuvable (UID {uid})")


def message_ids(raw: bytes) -> tuple[set[str], set[str]]:
    """(its own Message-ID, those it answers: In-Reply-To and References) of a message, as
    ``<id>`` strings, read by the gateway's header parser."""
    header = headers.parse(headers.split_head(raw)[0])
    own = {m for v in header.values("message-id") for m in _MSGID.findall(v)}
    answered = {m for name in ("in-reply-to", "references") for v in header.values(name)
                for m in _MSGID.findall(v)}
    return own, answered


def replies_in(session: MailboxSession, folder: str, own: set[str], answered: set[str],
               since: date) -> list[int]:
    """UIDs of ``folder`` (IMAP name, the Sent folder) that belong to a conversation: those
    answering one of its messages (``own`` in their In-Reply-To or References) or answered
    by one (``answered`` holds their Message-ID). The candidates are the messages stored since
    the day before ``since`` (the conversation's first date; SEARCH SINCE, an index lookup),
    the newest ``MAX_CANDIDATES`` of them, whose three fields are read in one FETCH and
    compared here: SEARCH HEADER goes through the full-text index, which does not index
    In-Reply-To and References (``mailstore.fts``)."""
    day = since - timedelta(days=1)
    criteria = f"SINCE {day.day}-{_MONTHS[day.month - 1]}-{day.year}"  # RFC 3501 date
    uids = [int(n) for n in _command(session, folder, "SEARCH", criteria).split()]
    uids = uids[-MAX_CANDIDATES:]
    if not uids:
        return []
    data = session._call(session.client.fetch, uids, [
        b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES)]"])
    found = []
    for uid in uids:
        block = next((v for k, v in data.get(uid, {}).items() if k.startswith(b"BODY[")), b"")
        ids, refs = message_ids(block if isinstance(block, bytes) else b"")
        if refs & own or ids & answered:
            found.append(uid)
    return found


def _senders(session: MailboxSession, folder: str, uids: list[int]
             ) -> dict[int, tuple[str, str, bool]]:
    """UID → (name, address, seen) of ``uids`` in ``folder``, one FETCH read by imaplib, the From
    field cut by regular expressions: IMAPClient's parser and ``email.utils.getaddresses``
    took two thirds of the list's time on 250 messages."""
    if not uids:
        return {}
    session.select(folder)
    raw = imaplib_of(session.client)
    try:
        typ, data = raw.uid("FETCH", ",".join(map(str, uids)),
                            "(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])")
    except raw.error as exc:
        raise ImapError(f"Erreur IMAP : {exc}") from exc
    if typ != "OK":
        raise ImapError("Erreur IMAP : lecture des expéditeurs refusée")
    found: dict[int, tuple[str, str, bool]] = {}
    text, block = b"", b""
    for item in [*data, None]:
        if item is None or (isinstance(item, tuple) and text):
            _sender(found, text, block)
            text, block = b"", b""
        if isinstance(item, tuple):
            text, block = item[0], item[1]
        elif isinstance(item, bytes):
            text += item
    return found


def _sender(found: dict[int, tuple[str, str, bool]], text: bytes, block: bytes) -> None:
    uid, flags = _UID.search(text), _FLAGS.search(text)
    if uid is None:
        return
    value = " ".join(" ".join(headers.parse(block).values("from")[:1]).split())
    named = _NAME_ADDR.match(value)
    name, address = (named.group(1).strip().strip('"'), named.group(2)) if named else \
        ("", value.strip())
    found[int(uid.group(1))] = (listing.display(name), address.strip().lower(),
                                bool(flags and b"\\Seen" in flags.group(1)))


def _line(uids: tuple[int, ...], latest: listing.Row,
          senders: dict[int, tuple[str, str, bool]]) -> Conversation:
    people: dict[str, tuple[str, str]] = {}
    for uid in uids:
        name, address, _seen = senders.get(uid, ("", "", True))
        if (address or name) and (address or name) not in people:
            people[address or name] = (name, address)
    unread = sum(1 for uid in uids if not senders.get(uid, ("", "", True))[2])
    return Conversation(uids, latest, tuple(people.values()), unread)
