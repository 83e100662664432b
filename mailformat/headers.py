"""The one parser of a message's header section (RFC 5322 §2.2, §3.6), shared by the gateway
(which checks), its stamp, and the webmail (which shows): CONVENTIONS.md, 13.

Readers disagree on malformed input: Dovecot and Python's ``email`` take a bare CR as a line
end, the gateway's LMTP and SMTP clients turn it into CRLF on the way out, and a parser that
cuts on LF only sees one field where the reader will see two. So the gateway does not guess:
``check`` refuses, at the end of DATA, every header section on which two readers could
disagree:

- a bare CR anywhere, a NUL, or line ends that mix CRLF and bare LF (RFC 5322 §2.2: fields
  are lines ending in CRLF; an all-LF section is read the same by everyone and is kept);
- a line that is neither a field (``name:`` with the name in printable US-ASCII, no white
  space before the colon, §3.6.8) nor a continuation (§2.2.3), or a continuation first;
- more than one of the fields §3.6 allows at most once (From, Sender, To, Subject, Date,
  Message-ID and the others in ``SINGLE``), or of the MIME fields (RFC 2045 §3) that say
  how the body is read (Content-Type, Content-Transfer-Encoding, MIME-Version).

Everything else (cutting, names, unfolded values, removing fields) is byte-exact: a header
section is cut at its first empty line and kept as is, field by field, so that removing a
field leaves every other byte in place. The gateway cuts a message once into a ``Head`` (its
fields and the message itself) and passes that along its steps, which read, remove and
prepend fields without cutting the header again. ``parse`` gives the same fields to a reader,
leniently (for what is already stored): it cuts lines where the most lenient reader does
(CRLF, LF or a bare CR) and records what ``check`` would have refused in ``Header.defects``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from core.errors import MssError
from mailformat.lineends import ANY_EOL

# RFC 5322 §3.6: the fields a message has at most once ("Max number" 1 in the table); and
# the MIME fields of RFC 2045 §3, which readers resolve differently when repeated (the
# gateway and Python's email take the first Content-Type, other readers the last).
SINGLE = ("date", "from", "sender", "reply-to", "to", "cc", "bcc", "message-id",
          "in-reply-to", "references", "subject", "mime-version", "content-type",
          "content-transfer-encoding")

_BLANK_LINE = re.compile(rb"\n\r?\n")
_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")  # ftext (RFC 5322 §3.6.8), then the colon
_MIXED = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class HeaderError(MssError):
    """A header section two readers could read differently (see the module docstring).
    ``message`` is French then English, and names no content."""

    code = "malformed_header"


@dataclass(frozen=True)
class Header:
    """A header section as a reader sees it: its fields in order, and what ``check`` would
    refuse in it (empty for anything the gateway accepted)."""

    fields: tuple[bytes, ...]
    defects: tuple[str, ...] = ()

    def values(self, name: str) -> list[str]:
        """The unfolded values of the fields called ``name`` (any case), in order."""
        return _values(self.fields, name)


@dataclass(frozen=True)
class Head:
    """A message with its header section cut once: ``raw``, the message as it is, and its
    ``fields`` in order, each with its continuation lines and line end, so that
    ``b"".join(fields) + body == raw``. What the gateway's steps pass along (``Head.of``
    cuts, and gives back a Head it is given); a new Head comes from a step that removes or
    prepends fields, never from cutting the header again."""

    raw: bytes
    fields: tuple[bytes, ...]

    @classmethod
    def of(cls, message: bytes | Head) -> Head:
        """``message`` cut (byte-exact, LF or CRLF line ends as they come), or ``message``
        itself when it already is a Head."""
        if isinstance(message, Head):
            return message
        return cls(message, tuple(_cut(split_head(message)[0])))

    @property
    def body(self) -> bytes:
        """What follows the header section: the empty line and the body."""
        return self.raw[sum(len(f) for f in self.fields):]

    def values(self, name: str) -> list[str]:
        """The unfolded values of the fields called ``name`` (any case), in order."""
        return _values(self.fields, name)

    def count(self, name: str) -> int:
        """How many fields are called ``name`` (any case)."""
        wanted = name.lower()
        return sum(1 for f in self.fields if field_name(f) == wanted)

    def without(self, drop: Callable[[str], bool], *,
                keep_field: Callable[[bytes], bool] | None = None) -> Head:
        """This message without the fields whose lower-case name ``drop`` accepts (unless
        ``keep_field`` says to keep that one); every other byte unchanged, and ``self`` when
        nothing goes."""
        kept = tuple(f for f in self.fields
                     if not drop(field_name(f)) or (keep_field is not None and keep_field(f)))
        if len(kept) == len(self.fields):
            return self
        return Head(b"".join(kept) + self.body, kept)

    def prepended(self, fields: bytes) -> Head:
        """This message with ``fields`` (one or more whole fields, each with its line end)
        above the others; only ``fields`` is cut."""
        return Head(fields + self.raw, (*_cut(fields), *self.fields))


# A message as the gateway's steps take it: bytes (callers outside the gateway, reports) or the
# Head the gateway cut once; a step that changes it gives it back in the same form.
Message = TypeVar("Message", bytes, Head)


def raw_of(message: bytes | Head) -> bytes:
    """The bytes of ``message``, without cutting anything."""
    return message.raw if isinstance(message, Head) else message


def same_form(like: Message, changed: bytes | Head) -> Message:
    """``changed`` in the form of ``like``: a Head when ``like`` is one (``changed`` cut only
    if it is bytes, a new message), else bytes."""
    if isinstance(like, Head):
        return Head.of(changed)
    return changed.raw if isinstance(changed, Head) else changed


# ---------------------------------------------------------------------- cutting
def split_head(raw: bytes) -> tuple[bytes, bytes]:
    """The header section (its last line end included) and the rest (the empty line and the
    body), such that ``head + rest == raw``. LF or CRLF line ends, as they come."""
    if raw.startswith((b"\n", b"\r\n")):
        return b"", raw
    found = _BLANK_LINE.search(raw)
    if found is None:
        return raw, b""
    return raw[: found.start() + 1], raw[found.start() + 1:]


def _cut(head: bytes) -> list[bytes]:
    """The fields of a header section, each with its continuation lines and line ends (cut on
    LF: with a bare CR refused by ``check``, that is where every reader cuts)."""
    fields: list[bytes] = []
    lines = head.split(b"\n")
    for index, line in enumerate(lines):
        piece = line + b"\n" if index < len(lines) - 1 else line
        if not piece:
            continue
        if piece[:1] in (b" ", b"\t") and fields:  # RFC 5322 §2.2.3 folding
            fields[-1] += piece
        else:
            fields.append(piece)
    return fields


def _values(fields: Iterable[bytes], name: str) -> list[str]:
    wanted = name.lower()
    return [field_value(f) for f in fields if field_name(f) == wanted]


def field_name(field: bytes) -> str:
    """The field's name, lower case (names are case-insensitive, RFC 5322 §1.2.2)."""
    return field.split(b":", 1)[0].strip().lower().decode("ascii", "replace")


def field_value_bytes(field: bytes) -> bytes:
    """The field's value unfolded (RFC 5322 §2.2.3), outer white space removed, as bytes."""
    value = field.split(b":", 1)[1] if b":" in field else b""
    return value.replace(b"\r", b"").replace(b"\n", b"").strip()


def field_value(field: bytes) -> str:
    """``field_value_bytes`` decoded (raw 8-bit taken as UTF-8, RFC 6532)."""
    return field_value_bytes(field).decode("utf-8", "replace")


# ---------------------------------------------------------------------- checking
def checked(message: bytes | Head) -> Head:
    """``message`` cut once, once its header section is one that every reader reads the same
    way (module docstring): the gateway's first content step.

    Raises:
        HeaderError: the first defect found, in French then English.
    """
    head = Head.of(message)
    section = b"".join(head.fields)
    defects = _defects(section + _separator(head.body), head.fields, strict=True)
    if defects:
        raise HeaderError(defects[0])
    return head


def check(raw: bytes) -> list[bytes]:
    """The fields of the message ``raw`` (``checked``).

    Raises:
        HeaderError: the first defect found, in French then English.
    """
    return list(checked(raw).fields)


def _separator(rest: bytes) -> bytes:
    """The empty line that ends the header section, as it is in ``rest``."""
    return rest[:2] if rest.startswith(b"\r\n") else rest[:1]


def _defects(section: bytes, fields: Iterable[bytes], *, strict: bool) -> list[str]:
    found: list[str] = []
    if b"\x00" in section:
        found.append("Octet nul dans l'en-tête / NUL byte in the header section")
    if b"\r" in section and _MIXED.search(section):  # all-LF is fine; CRLF must be all CRLF
        found.append("Retour chariot ou saut de ligne isolé dans l'en-tête (CR ou LF nu) / "
                     "bare CR or LF in the header section")
        if strict:
            return found
    counts: dict[str, int] = {}
    for field in fields:
        if not _NAME.match(field):
            found.append("Ligne d'en-tête sans nom de champ valide suivi de « : » / header "
                         "line without a field name and colon")
            if strict:
                return found
            continue
        name = field_name(field)
        counts[name] = counts.get(name, 0) + 1
    repeated = [n for n in SINGLE if counts.get(n, 0) > 1]
    if repeated:
        found.append(f"Champ d'en-tête en double : {', '.join(repeated)} (RFC 5322, 3.6) / "
                     "duplicated header field")
    return found


# ---------------------------------------------------------------------- reading
def parse(block: bytes) -> Header:
    """A header section as the most lenient reader sees it (lines cut at CRLF, LF or a bare
    CR, lines without a field name skipped), with the defects ``check`` would refuse.

    For what is already in a mailbox (an IMAP APPEND does not pass the gateway): a reader
    shows these fields and must not trust anything the gateway vouched for when
    ``defects`` is not empty."""
    section = block.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = [line for line in ANY_EOL.split(section) if line]
    fields: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    defects = _defects(block, fields, strict=False)
    return Header(tuple(f for f in fields if _NAME.match(f)), tuple(defects))
