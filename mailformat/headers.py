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
field leaves every other byte in place. ``parse`` gives the same fields to a reader, leniently
(for what is already stored): it cuts lines where the most lenient reader does (CRLF, LF or a
bare CR) and records what ``check`` would have refused in ``Header.defects``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
        wanted = name.lower()
        return [field_value(f) for f in self.fields if field_name(f) == wanted]


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


def header_fields(head: bytes) -> list[bytes]:
    """The fields of a header section ``check`` accepted, each with its continuation lines
    and line ends (cut on LF: with a bare CR refused, that is where every reader cuts)."""
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


def drop_fields(raw: bytes, drop: Callable[[str], bool], *,
                keep_field: Callable[[bytes], bool] | None = None) -> bytes:
    """``raw`` without the header fields whose lower-case name ``drop`` accepts (unless
    ``keep_field`` says to keep that one); every other byte unchanged."""
    head, rest = split_head(raw)
    fields = header_fields(head)
    kept = [f for f in fields
            if not drop(field_name(f)) or (keep_field is not None and keep_field(f))]
    return raw if len(kept) == len(fields) else b"".join(kept) + rest


# ---------------------------------------------------------------------- checking
def check(raw: bytes) -> list[bytes]:
    """The fields of the message ``raw``, once its header section is one that every reader
    reads the same way (module docstring).

    Raises:
        HeaderError: the first defect found, in French then English.
    """
    head, rest = split_head(raw)
    defects = _defects(head + _separator(rest), header_fields(head), strict=True)
    if defects:
        raise HeaderError(defects[0])
    return header_fields(head)


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
