"""Messages for the message-list tests (tests/test_webmail_list*.py): plain, with a real
attachment in the shapes MSSanté mail takes (multipart/mixed, inside multipart/signed, a lone
PDF), signed without attachment, with an inline image, stored into a folder by IMAP APPEND
(imaplib, as the user) with chosen dates and flags."""

from __future__ import annotations

import email.utils
import imaplib
from datetime import UTC, datetime, timedelta

BOUNDARY = "=_frontiere"
PDF = "JVBERi0xLjQKJcOkw7zDtsOfCg=="  # base64 of a PDF header
P7S = "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAKCA"


def message(subject: str, *, sender: str = "Paul Durand <paul.durand@mss.test>",
            to: str = "leo.faure@mss.test", when: datetime | None = None,
            kind: str = "plain", padding: int = 0) -> bytes:
    """One message; ``kind``: plain, mixed, signed (a signature only), signed-mixed, pdf
    (a lone attached PDF), inline (an inline image, no attachment). ``padding``: bytes of
    text added (the size column)."""
    when = when or datetime.now(UTC)
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.format_datetime(when)}\r\n"
            f"Message-ID: <{abs(hash((subject, when)))}@test>\r\nMIME-Version: 1.0\r\n")
    text = "Bonjour,\r\n" + ("x" * 70 + "\r\n") * (padding // 72)
    plain = f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}"
    pdf = ('Content-Type: application/pdf; name="cr.pdf"\r\nContent-Transfer-Encoding: base64'
           f'\r\nContent-Disposition: attachment; filename="cr.pdf"\r\n\r\n{PDF}\r\n')
    p7s = ('Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
           'Content-Transfer-Encoding: base64\r\n'
           f'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n{P7S}\r\n')
    if kind == "plain":
        return (head + plain).encode()
    if kind == "pdf":
        return (head + pdf).encode()
    if kind == "mixed":
        return (head + _multipart("mixed", BOUNDARY, [plain, pdf])).encode()
    if kind == "signed":
        return (head + _multipart("signed", BOUNDARY, [plain, p7s], 'protocol="application/'
                                  'pkcs7-signature"; micalg=sha-256; ')).encode()
    if kind == "signed-mixed":
        inner = _multipart("mixed", "=_interieur", [plain, pdf])
        return (head + _multipart("signed", BOUNDARY, [inner, p7s], 'protocol="application/'
                                  'pkcs7-signature"; micalg=sha-256; ')).encode()
    if kind == "inline":
        image = ("Content-Type: image/png\r\nContent-ID: <logo>\r\nContent-Disposition: "
                 "inline\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n")
        html = 'Content-Type: text/html; charset=utf-8\r\n\r\n<p><img src="cid:logo"></p>'
        return (head + _multipart("related", BOUNDARY, [html, image])).encode()
    raise ValueError(kind)


def _multipart(subtype: str, boundary: str, parts: list[str], params: str = "") -> str:
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    return (f'Content-Type: multipart/{subtype}; {params}boundary="{boundary}"\r\n\r\n'
            f"{body}--{boundary}--\r\n")


def store(conn: imaplib.IMAP4, folder: str, raw: bytes, flags: str = "") -> None:
    """APPEND ``raw`` to ``folder`` with ``flags`` (``"\\\\Seen \\\\Flagged"``)."""
    typ, data = conn.append(folder, f"({flags})" if flags else None, None, raw)
    assert typ == "OK", data


def folder_with(conn: imaplib.IMAP4, folder: str) -> None:
    """Create ``folder`` (a fresh one per test)."""
    typ, data = conn.create(folder)
    assert typ == "OK", data


def uids(conn: imaplib.IMAP4, folder: str, criteria: str = "ALL") -> list[int]:
    """UIDs of ``folder`` matching ``criteria`` (read-only)."""
    conn.select(folder, readonly=True)
    typ, data = conn.uid("SEARCH", criteria)
    assert typ == "OK", data
    return [int(n) for n in data[0].split()]


def day(n: int) -> datetime:
    """A fixed date: the n-th day after 1 March 2026, 10:00 UTC."""
    return datetime(2026, 3, 1, 10, tzinfo=UTC) + timedelta(days=n)
