"""The client host of tests/test_topology_netns.py: run inside its own network namespace
(``ip netns exec … python -m tests.netns_client …``), it reaches the other hosts only by their
198.18.0.0/24 addresses. Each command prints what it saw, one line at a time and flushed, so
that the test knows what was acknowledged even when a server dies mid-way.

    submit HOST PORT USER PASSWORD RCPT CA TOKEN…   one SMTP session; "ok TOKEN" per 250
    count HOST PORT USER PASSWORD CA                JSON {token: copies} of the INBOX
    webmail URL LOGIN PASSWORD SPOOL RCPT TOKEN     log in (password + e-mailed code), send
"""

from __future__ import annotations

import email
import html
import imaplib
import json
import re
import smtplib
import ssl
import sys
import time
import urllib.parse
from collections import Counter
from http.client import HTTPSConnection
from pathlib import Path


def _context(ca: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False  # the test host reaches servers by address (see the test)
    return context


def submit(host: str, port: str, user: str, password: str, rcpt: str, ca: str,
           *tokens: str) -> None:
    try:
        with smtplib.SMTP(host, int(port), timeout=30) as smtp:
            smtp.starttls(context=_context(ca))
            smtp.login(user, password)
            for token in tokens:
                raw = (f"From: {user}\r\nTo: {rcpt}\r\nSubject: topologie {token}\r\n"
                       f"Message-ID: <{token}@netns.test>\r\nX-MSS-Trace: {token}\r\n\r\n"
                       "Bonjour.\r\n").encode()
                smtp.sendmail(user, [rcpt], raw)
                print(f"ok {token}", flush=True)
    except (OSError, smtplib.SMTPException) as exc:
        print(f"err {type(exc).__name__}", flush=True)


def count(host: str, port: str, user: str, password: str, ca: str) -> None:
    found: Counter[str] = Counter()
    with imaplib.IMAP4_SSL(host, int(port), ssl_context=_context(ca), timeout=20) as imap:
        imap.login(user, password)
        if imap.select("INBOX", readonly=True)[0] == "OK":
            _, data = imap.search(None, "ALL")
            for num in data[0].split():
                _, parts = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                header = parts[0][1] if isinstance(parts[0], tuple) else b""
                match = re.search(r"topologie (\S+)",
                                  str(email.message_from_bytes(header)["Subject"] or ""))
                if match:
                    found[match.group(1)] += 1
    print(json.dumps(found), flush=True)


class _Browser:
    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the page only
        self.conn = HTTPSConnection(parts.hostname or "", parts.port, context=context,
                                    timeout=60)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.cookie = ""

    def request(self, method: str, path: str,
                fields: list[tuple[str, str]] | None = None) -> tuple[int, str, str]:
        headers = {"Cookie": self.cookie, "Referer": self.origin + path}
        body = None
        if fields is not None:
            body = urllib.parse.urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        for value in response.headers.get_all("Set-Cookie") or []:
            self.cookie = value.split(";", 1)[0]
        location = urllib.parse.urlsplit(response.headers.get("Location") or "")
        return response.status, text, location.path + (
            "?" + location.query if location.query else "")


def _token(page: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    if not match:
        raise SystemExit("pas de jeton CSRF")
    return html.unescape(match.group(1))


def _inputs(page: str) -> list[tuple[str, str]]:
    """The compose form's hidden fields and chosen sender, as the page gives them."""
    found = [(html.unescape(n), html.unescape(v)) for n, v in re.findall(
        r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page)]
    box = re.search(r'name="from_box"[^>]*value="([^"]+)"', page) or re.search(
        r'<option[^>]*value="([^"]+)"[^>]*selected', page)
    return found + ([("from_box", box.group(1))] if box else [])


def webmail(url: str, login: str, password: str, spool: str, rcpt: str, token: str) -> None:
    web = _Browser(url)
    _, page, _ = web.request("GET", "/connexion")
    before = set(Path(spool).glob("*.eml")) if Path(spool).is_dir() else set()
    status, _, where = web.request("POST", "/connexion", [
        ("csrf_token", _token(page)), ("identifier", login), ("password", password)])
    assert status in (302, 303), f"connexion refusée ({status})"
    code = _mailed_code(Path(spool), before)
    _, page, _ = web.request("GET", where)
    status, _, _ = web.request("POST", where, [("csrf_token", _token(page)), ("code", code)])
    assert status in (302, 303), f"code refusé ({status})"
    status, _, where = web.request("GET", "/courrier/ecrire")
    _, page, _ = web.request("GET", where)
    fields = [(n, v) for n, v in _inputs(page) if n not in ("to", "subject", "body")]
    fields += [("to", rcpt), ("subject", f"topologie {token}"), ("body", "Bonjour."),
               ("action", "envoyer")]
    status, text, _ = web.request("POST", where, fields)
    assert status in (302, 303), f"envoi refusé ({status}) {text[:2000]}"
    print(f"ok {token}", flush=True)


def _mailed_code(spool: Path, before: set[Path]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for path in sorted(set(spool.glob("*.eml")) - before):
            message = email.message_from_bytes(path.read_bytes())
            part = message.get_payload(decode=True) if not message.is_multipart() else \
                next(message.walk()).get_payload(decode=True)
            match = re.search(rb"\b(\d{6})\b", part or b"")
            if match:
                return match.group(1).decode()
        time.sleep(0.2)
    raise SystemExit("aucun code reçu")


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "submit":
        submit(*args[:6], *args[6:])
    elif what == "count":
        count(*args)
    else:
        webmail(*args)
