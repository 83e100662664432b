"""What the reading tests (conversations, previews, ZIP, print, source) put in mailboxes: real
files built here byte by byte (a PNG through zlib, a PDF with its cross-reference table, a PDF
that runs JavaScript), messages with such attachments, and conversations (Message-ID /
In-Reply-To / References) stored through IMAP APPEND as a client would."""

from __future__ import annotations

import email.policy
import email.utils
import imaplib
import struct
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

# Changes the page when run: the tests look for it in the title, the DOM and dialogs.
PAYLOAD = "<script>parent.document.title='PIRATE';document.title='PIRATE';alert('PIRATE')</script>"
HTML_ATTACHMENT = f"<html><body onload=\"alert('PIRATE')\"><h1>Piège</h1>{PAYLOAD}</body></html>"
SVG_ATTACHMENT = ('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(\'PIRATE\');'
                  'top.document.title=\'PIRATE\'" width="10" height="10">'
                  '<script>top.document.title="PIRATE"</script></svg>')


def png(width: int = 48, height: int = 32, rgb: tuple[int, int, int] = (11, 92, 171)) -> bytes:
    """A real PNG (RFC 2083): one colour, 8-bit RGB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def pdf(text: str = "Compte rendu de consultation", *, javascript: str | None = None) -> bytes:
    """A real one-page PDF 1.4 showing ``text``; ``javascript`` runs when it opens."""
    content = f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode("latin-1")
    catalog = b"<< /Type /Catalog /Pages 2 0 R" + (b" /OpenAction 6 0 R" if javascript
                                                    else b"") + b" >>"
    objects = [catalog, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    if javascript:
        objects.append(b"<< /Type /Action /S /JavaScript /JS (" + javascript.encode() + b") >>")
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return out


def message(sender: str, to: str, subject: str, text: str, *,
            attachments: Sequence[tuple[str, str, bytes]] = (), when: datetime | None = None,
            message_id: str | None = None, reply_to: Sequence[str] = (),
            html: str | None = None) -> bytes:
    """An RFC 5322 message; ``attachments``: (file name, content type, bytes); ``reply_to``:
    the Message-IDs it answers, oldest first (In-Reply-To is the last)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = email.utils.format_datetime(when or datetime.now(UTC))
    msg["Message-ID"] = message_id or email.utils.make_msgid("lecture", domain="mss.test")
    if reply_to:
        msg["In-Reply-To"] = reply_to[-1]
        msg["References"] = " ".join(reply_to)
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for name, ctype, data in attachments:
        main, sub = ctype.split("/", 1)
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes()


def append(conn: imaplib.IMAP4, raw: bytes, folder: str = "INBOX", *,
           seen: bool = False) -> int:
    """Store ``raw`` in ``folder`` (an IMAP client's APPEND); its UID (UIDPLUS)."""
    typ, data = conn.append(folder, "(\\Seen)" if seen else None, None, raw)
    assert typ == "OK", data
    text = data[0].decode() if data and isinstance(data[0], bytes) else ""
    return int(text.split("APPENDUID ", 1)[1].split()[1].rstrip("]"))


def thread(conn: imaplib.IMAP4, people: Sequence[str], to: str, subject: str, count: int, *,
           start: datetime, seen_until: int = 0, tag: str = "fil",
           folder: str = "INBOX") -> list[int]:
    """A conversation of ``count`` messages a day apart, each answering all the previous
    ones (``people`` write in turn); the first ``seen_until`` are already read. UIDs in
    order."""
    ids: list[str] = []
    uids = []
    for index in range(count):
        mid = f"<{tag}-{index}-{start.timestamp():.0f}@mss.test>"
        raw = message(people[index % len(people)], to,
                      subject if index == 0 else f"RE: {subject}",
                      f"Message {index + 1} de la conversation {tag}.\n",
                      when=start + timedelta(days=index), message_id=mid, reply_to=ids)
        uids.append(append(conn, raw, folder, seen=index < seen_until))
        ids.append(mid)
    return uids


def white_share(picture: bytes) -> float:
    """The share of white pixels (each channel ≥ 240) of a PNG screenshot (8-bit RGB or
    RGBA, not interlaced, as Chromium writes them): RFC 2083's five row filters undone."""
    width = height = kind = 0
    data = b""
    at = 8
    while at < len(picture):
        size, name = struct.unpack(">I4s", picture[at:at + 8])
        body = picture[at + 8:at + 8 + size]
        if name == b"IHDR":
            width, height, depth, kind = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and body[12] == 0, "8-bit, non-interlaced PNG expected"
        elif name == b"IDAT":
            data += body
        at += 12 + size
    step = {2: 3, 6: 4}[kind]
    raw, stride = zlib.decompress(data), width * step
    previous, white, position = bytearray(stride), 0, 0
    for _ in range(height):
        kind_of_filter, line = raw[position], bytearray(raw[position + 1:position + 1 + stride])
        position += 1 + stride
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up, corner = previous[i], previous[i - step] if i >= step else 0
            if kind_of_filter == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind_of_filter == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind_of_filter == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind_of_filter == 4:
                guess = left + up - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up), 1, up),
                           (abs(guess - corner), 2, corner))[2]
                line[i] = (line[i] + near) & 0xFF
        white += sum(1 for x in range(0, stride, step) if min(line[x:x + 3]) >= 240)
        previous = line
    return white / max(1, width * height)
