"""Reading a message: its header fields, the text to show, its attachments.

Parts are numbered by their position in ``Message.walk()`` over the whole message, so a
number is stable for a given message and names the same part in the read view, the download
link and a forward. An S/MIME ``multipart/signed`` wrapper is looked through (RFC 8551
§3.5.3: the first part is the content, the second the signature, which is not an attachment
for the reader); a forwarded ``message/rfc822`` is one attachment, not opened here.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage, Message

from core.errors import NotFound
from mailstore.listing import display, parse_date

SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
ENVELOPED_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
# MSSanté fields shown with a meaning (DESIGN: "MSSanté headers shown meaningfully").
MSS_LABELS = {
    "x-mss-ins": "INS du patient (identifiant national de santé)",
    "x-mss-patient": "Référence patient",
    "x-mss-trace": "Référence de suivi",
    "x-mss-document-type": "Type de document",
}


@dataclass(frozen=True)
class Part:
    """A part offered for download."""

    index: int
    content_type: str
    filename: str
    size: int
    content_id: str = ""

    @property
    def is_xdm(self) -> bool:
        """An IHE XDM package (IHE ITI TF-1 §16: ``IHE_XDM.zip``)."""
        return self.filename.lower() == "ihe_xdm.zip"


@dataclass
class Reading:
    """What the read view shows of one message."""

    message: EmailMessage
    text: str | None = None
    html_index: int | None = None
    attachments: list[Part] = field(default_factory=list)
    inline: dict[str, int] = field(default_factory=dict)  # Content-ID -> part index
    unreadable: str | None = None  # why the content cannot be shown (still encrypted…)

    def header(self, name: str) -> str:
        return display(self.message.get(name, ""))

    def addresses(self, *names: str) -> list[str]:
        values = [str(v) for n in names for v in self.message.get_all(n, [])]
        return [a for _, a in email.utils.getaddresses(values) if a]

    @property
    def date(self) -> datetime | None:
        return parse_date(str(self.message.get("Date", "")) or None)

    @property
    def message_id(self) -> str:
        return str(self.message.get("Message-ID", "")).strip()

    @property
    def mss_fields(self) -> list[tuple[str, str]]:
        """The ``X-MSS-*`` fields as (meaning, value)."""
        return [(MSS_LABELS.get(name.lower(), name[6:].replace("-", " ")), display(value))
                for name, value in self.message.items() if name.lower().startswith("x-mss-")]

    @property
    def mdn_to(self) -> str | None:
        """The address asking for a read receipt (RFC 8098 §2.1), if exactly one."""
        found = self.addresses("Disposition-Notification-To")
        return found[0] if len(found) == 1 else None


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def read(raw: bytes) -> Reading:
    """The reading of ``raw`` (see the module docstring)."""
    message = parse(raw)
    reading = Reading(message)
    parts = list(message.walk())
    skip = _inside_attached_messages(parts)
    for index, part in enumerate(parts):
        if index in skip or part.is_multipart():
            continue
        _classify(reading, index, part)
    return reading


def _inside_attached_messages(parts: Sequence[Message]) -> set[int]:
    """Indexes of the parts inside a ``message/rfc822`` part (and the signature parts)."""
    skip: set[int] = set()
    for index, part in enumerate(parts):
        if part.get_content_type() == "message/rfc822" and index not in skip:
            inner = {id(p) for p in part.walk()} - {id(part)}
            skip |= {i for i, p in enumerate(parts) if id(p) in inner}
        if part.get_content_type() in SIGNATURE_TYPES:
            skip.add(index)
    return skip


def _classify(reading: Reading, index: int, part: Message) -> None:
    ctype = part.get_content_type()
    attached = part.get_content_disposition() == "attachment" or bool(part.get_filename())
    if ctype == "text/plain" and not attached and reading.text is None:
        reading.text = text_of(part)
    elif ctype == "text/html" and not attached and reading.html_index is None:
        reading.html_index = index
    elif ctype in ENVELOPED_TYPES and index == 0:
        reading.unreadable = ("Ce message est resté chiffré : il n’a pas pu être déchiffré par "
                              "l’opérateur (certificat de la boîte absent ou différent).")
        reading.attachments.append(_part(index, part))
    else:
        found = _part(index, part)
        if found.content_id:
            reading.inline[found.content_id] = index
        if attached or not ctype.startswith(("text/", "multipart/")) or ctype == "text/calendar":
            reading.attachments.append(found)


def _part(index: int, part: Message) -> Part:
    size = len(part_bytes(part))
    ctype = part.get_content_type()
    name = part.get_filename() or default_name(ctype, index)
    cid = str(part.get("Content-ID", "")).strip().strip("<>")
    return Part(index, ctype, name, size, cid)


def default_name(ctype: str, index: int) -> str:
    extension = {"message/rfc822": "eml", "application/pdf": "pdf", "text/plain": "txt",
                 "text/html": "html", "image/png": "png", "image/jpeg": "jpg"}.get(ctype, "bin")
    return f"piece-{index}.{extension}"


def text_of(part: Message) -> str:
    """A text part decoded with its charset (UTF-8 with replacement when unknown)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload())
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def part_at(message: Message, index: int) -> Message:
    """The leaf part number ``index`` (see the module docstring).

    Raises:
        NotFound: no such part, or a multipart container.
    """
    parts = list(message.walk())
    if not 0 <= index < len(parts):
        raise NotFound("Pièce jointe introuvable.")
    part = parts[index]
    if part.is_multipart() and part.get_content_type() != "message/rfc822":
        raise NotFound("Pièce jointe introuvable.")
    return part


def part_bytes(part: Message) -> bytes:
    """The decoded content of a part (an attached message as its RFC 5322 bytes)."""
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return bytes(inner[0].as_bytes(policy=email.policy.SMTP))
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""
