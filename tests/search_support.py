"""Messages for the full-text search tests and benchmark (``bench/search.py``): plain text
or multipart with a PDF attachment whose text only ``pdftotext`` can read (the words are in
the PDF's content stream, never in the message's own text parts).

``pdf`` writes the smallest PDF that ``pdftotext`` reads: one page, Helvetica in
WinAnsiEncoding (so accented French letters come out as such), one line of text per line.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

CRLF = "\r\n"


def pdf(lines: Sequence[str]) -> bytes:
    """A one-page PDF showing ``lines`` (characters of Windows-1252 only)."""

    def literal(text: str) -> str:
        return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"

    # ' moves to the next line (leading 14) and shows the string (PDF 1.7 §9.4.3).
    stream = ("BT /F1 11 Tf 56 790 Td 14 TL " + " ".join(f"{literal(line)} '" for line in lines)
              + " ET").encode("cp1252")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def message(subject: str, body: str, *, sender: str = "Paul Durand <paul.durand@mss.test>",
            to: str = "marie.martin@mss.test", date: str = "Mon, 10 Nov 2025 10:00:00 +0100",
            message_id: str = "", attachment: tuple[str, bytes] | None = None) -> bytes:
    """An RFC 5322 message in UTF-8 (8bit), with one attached PDF when given
    ``(file name, PDF bytes)``."""
    head = (f"From: {sender}{CRLF}To: {to}{CRLF}Subject: {_header(subject)}{CRLF}"
            f"Date: {date}{CRLF}" + (f"Message-ID: <{message_id}>{CRLF}" if message_id else "")
            + f"MIME-Version: 1.0{CRLF}")
    text = (f"Content-Type: text/plain; charset=utf-8{CRLF}"
            f"Content-Transfer-Encoding: 8bit{CRLF}{CRLF}{body.replace(chr(10), CRLF)}{CRLF}")
    if attachment is None:
        return (head + text).encode()
    name, data = attachment
    encoded = base64.encodebytes(data).decode("ascii").replace("\n", CRLF)
    return (head + f'Content-Type: multipart/mixed; boundary="part"{CRLF}{CRLF}'
            f"--part{CRLF}{text}--part{CRLF}Content-Type: application/pdf{CRLF}"
            f'Content-Disposition: attachment; filename="{name}"{CRLF}'
            f"Content-Transfer-Encoding: base64{CRLF}{CRLF}{encoded}--part--{CRLF}").encode()


def _header(value: str) -> str:
    """A Subject as an RFC 2047 encoded word when it is not ASCII."""
    if value.isascii():
        return value
    return "=?utf-8?b?" + base64.b64encode(value.encode()).decode("ascii") + "?="
