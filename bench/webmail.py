"""The webmail's inbox page with 10,000 messages in the mailbox: through the webmail (HTTPS,
logged in, keep-alive) against plain imaplib fetching the same page from the same Dovecot.

- ``webmail``: GET /courrier/<box> — page 1 of the Boîte de réception (50 messages, newest
  first), rendered with its sidebar (mailboxes, folders with unread counts). The webmail runs
  in a process of its own (``WebmailService``: cheroot + Flask), so its memory is its own.
- ``imaplib, page``: one logged-in connection, kept open; per page: UID SORT (REVERSE DATE)
  and UID FETCH of the 50 newest with the same items (flags, size, structure, header fields).
- ``imaplib, same IMAP work``: the same plus what the sidebar needs (LIST, STATUS per folder).
- ``imaplib, new connection``: TLS + LOGIN + SELECT + SORT + FETCH per page, as a client that
  keeps nothing open does.

Dovecot runs here on a throwaway trust space; 10,000 messages are APPENDed (a few with an
attachment and a gateway verdict). Run from the repository root (root or not)::

    .venv/bin/python -m bench.webmail [--messages 10000] [--rounds 300]
"""

from __future__ import annotations

import argparse
import http.client
import imaplib
import json
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailstore.config import Options  # noqa: E402
from mailstore.listing import ITEMS  # noqa: E402
from mailstore.service import DovecotService  # noqa: E402
from tests.mailstore_fixtures import (  # noqa: E402
    PASSWORD,
    TrustSpace,
    build,
    free_port,
    make_settings,
    open_tempdir,
)

USER = "marie"
PER_PAGE = 50
_TOKEN = re.compile(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"')


# ---------------------------------------------------------------------- the mailbox
def _message(i: int) -> bytes:
    day, minute = 1 + i % 28, i % 60
    verdict = (b"Authentication-Results: mss.test; smime=pass (not encrypted)\r\n"
               if i % 3 else b"")
    head = verdict + (
        f"From: Paul Durand <paul.durand@mss.test>\r\nTo: marie.martin@mss.test\r\n"
        f"Subject: =?utf-8?q?R=C3=A9sultats_d'analyse_n=C2=B0_{i}?=\r\n"
        f"Date: Mon, {day} Sep 2025 {i % 24:02d}:{minute:02d}:00 +0200\r\n"
        f"Message-ID: <bench-{i}@mss.test>\r\nMIME-Version: 1.0\r\n").encode()
    text = b"Bonjour,\r\nvoici les resultats.\r\n" + b"Ligne de compte rendu.\r\n" * 40
    if i % 10:
        return head + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
    return (head + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: '
            b"text/plain\r\n\r\n" + text + b"\r\n--b\r\nContent-Type: application/pdf\r\n"
            b"Content-Disposition: attachment; filename=cr.pdf\r\nContent-Transfer-Encoding: "
            b"base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n")


def _fill(space: TrustSpace, count: int, batch: int = 500) -> float:
    """APPEND ``count`` messages, ``batch`` per command: MULTIAPPEND (RFC 3502) with
    non-synchronising literals (LITERAL+, RFC 7888), which imaplib cannot send."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", space.settings.imaps_port)) as raw, \
            space.tls_context().wrap_socket(raw, server_hostname="localhost") as tls:
        reader = tls.makefile("rb")
        reader.readline()  # greeting
        _command(tls, reader, b"a0", f'LOGIN "{space.address(USER)}" "{PASSWORD}"'.encode())
        for first in range(0, count, batch):
            parts = [b"APPEND INBOX"]
            for i in range(first, min(first + batch, count)):
                data = _message(i)
                flags = b"(\\Seen)" if i % 4 else b"()"
                parts.append(b" %s {%d+}\r\n%s" % (flags, len(data), data))
            _command(tls, reader, b"a%d" % (first + 1), b"".join(parts))
        _command(tls, reader, b"z", b"LOGOUT")
    return time.perf_counter() - start


def _command(tls: ssl.SSLSocket, reader: Any, tag: bytes, command: bytes) -> None:
    tls.sendall(tag + b" " + command + b"\r\n")
    while True:
        line = reader.readline()
        if line.startswith(tag + b" "):
            assert line.split()[1] == b"OK", line
            return


# ---------------------------------------------------------------------- the webmail process
def serve(data_dir: str, overrides: str) -> None:
    """``--serve``: run the webmail until SIGTERM, print its port (child process)."""
    import threading

    from core.db import Database
    from core.settings import Settings
    from webmail.service import WebmailService

    settings = Settings.load(data_dir=data_dir, environ={}, **json.loads(overrides))
    service = WebmailService(settings, Database(settings.effective_database_url),
                             test_config={"RATE_LOGIN": "1000 per minute"})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    print(service.port, flush=True)
    stop.wait()
    service.stop()


def _start_webmail(space: TrustSpace) -> tuple[subprocess.Popen[str], int]:
    overrides = {"imaps_port": space.settings.imaps_port, "web_port": free_port(),
                 "listen_address": "127.0.0.1", "hostname": "localhost",
                 "demo_password": PASSWORD}
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.webmail", "--serve", str(space.settings.data_dir),
         json.dumps(overrides)], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parent.parent)
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def _rss_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


class Browser:
    """One keep-alive HTTPS connection with the card certificate, and the session cookie."""

    def __init__(self, space: TrustSpace, port: int) -> None:
        context = space.tls_context(USER)
        context.check_hostname = False
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=context)
        self.cookie = ""
        self.origin = f"https://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        headers = {"Cookie": self.cookie, "Referer": self.origin + path}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read().decode("utf-8", "replace")
        for value in response.headers.get_all("Set-Cookie") or []:
            self.cookie = value.split(";", 1)[0]
        return response.status, data

    def login(self) -> None:
        _status, page = self.request("GET", "/connexion")
        token = _TOKEN.search(page)
        assert token, "pas de jeton CSRF sur /connexion"
        status, _ = self.request("POST", "/connexion/carte", f"csrf_token={token.group(1)}")
        assert status == 302, f"connexion par carte refusée ({status})"


# ---------------------------------------------------------------------- imaplib baselines
def _sorted_page(conn: imaplib.IMAP4_SSL) -> list[bytes]:
    _typ, data = conn.uid("SORT", "(REVERSE DATE)", "UTF-8", "ALL")
    return data[0].split()[:PER_PAGE]


def _page_only(conn: imaplib.IMAP4_SSL) -> None:
    uids = _sorted_page(conn)
    typ, _data = conn.uid("FETCH", b",".join(uids).decode(), ITEMS)
    assert typ == "OK"


def _same_work(conn: imaplib.IMAP4_SSL) -> None:
    _typ, folders = conn.list()
    for line in folders:
        name = line.decode().rsplit(' "/" ', 1)[-1]  # type: ignore[union-attr]
        conn.status(name, "(MESSAGES UNSEEN)")
    _page_only(conn)


def _new_connection(space: TrustSpace) -> None:
    conn = space.imaps()
    conn.login(space.address(USER), PASSWORD)
    conn.select("INBOX")
    _page_only(conn)
    conn.logout()


# ---------------------------------------------------------------------- measuring
def _measure(view: Callable[[], None], rounds: int) -> list[float]:
    for _ in range(5):
        view()  # warm-up: pooled session, Dovecot's indexes and sort cache, templates
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        view()
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def _report(name: str, timings: list[float]) -> tuple[float, float]:
    ordered = sorted(timings)
    p50 = statistics.median(ordered)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    print(f"{name:<44} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   (n={len(timings)})")
    return p50, p95


def _run(space: TrustSpace, args: argparse.Namespace) -> None:
    print(f"{args.messages} messages APPENDed in {_fill(space, args.messages):.1f} s")
    child, port = _start_webmail(space)
    try:
        browser = Browser(space, port)
        browser.login()
        _check_page(browser)

        def web() -> None:
            code, _body = browser.request("GET", "/courrier/1")
            assert code == 200

        results = {"webmail": _report("webmail (HTTPS, logged in, keep-alive)",
                                      _measure(web, args.rounds))}
        memory = _rss_kb(child.pid)
        conn = space.imaps()
        conn.login(space.address(USER), PASSWORD)
        conn.select("INBOX")
        results["page"] = _report("imaplib, page (SORT + FETCH 50)",
                                  _measure(lambda: _page_only(conn), args.rounds))
        results["same"] = _report("imaplib, same IMAP work (+ LIST/STATUS)",
                                  _measure(lambda: _same_work(conn), args.rounds))
        conn.logout()
        results["new"] = _report("imaplib, new connection per page",
                                 _measure(lambda: _new_connection(space), args.rounds // 3))
        _ratios(results)
        print(f"webmail process memory: RSS {memory['VmRSS'] / 1024:.1f} MiB, "
              f"peak {memory['VmHWM'] / 1024:.1f} MiB")
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(20)


def _check_page(browser: Browser) -> None:
    status, page = browser.request("GET", "/courrier/1")
    assert status == 200 and page.count('name="uid"') == PER_PAGE, status


def _ratios(results: dict[str, tuple[float, float]]) -> None:
    web = results["webmail"]
    for key, label in (("page", "page"), ("same", "same IMAP work"),
                       ("new", "new connection")):
        base = results[key]
        print(f"ratio webmail / imaplib {label:<15} p50 {web[0] / base[0]:5.2f}x   "
              f"p95 {web[1] / base[1]:5.2f}x")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        serve(argv[1], argv[2])
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv)
    root = open_tempdir("mss-bench-webmail-")
    space = build(make_settings(root / "data", mailbox_quota_mb=4096))
    service = DovecotService(space.settings, space.db, options=Options())
    service.start()
    try:
        _run(space, args)
    finally:
        service.stop()
        space.db.dispose()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
