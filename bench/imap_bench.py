"""IMAP latency of a webmail page view: the webmail's client layer vs plain imaplib.

One page view = open the user's mailbox, select INBOX, fetch the 50 newest envelopes.

- ``mailstore.pool`` and ``mailstore.listing`` (what the webmail uses): a warm pool, the
  session already logged in over TLS; the view costs SELECT (skipped when already selected)
  + SORT + FETCH of the list's lines.
- plain ``imaplib``: what a naive webmail does per view — TCP + TLS handshake, LOGIN (the same
  master-user login, so both use the same cheap authentication), SELECT, FETCH 50 envelopes,
  LOGOUT.

Both run against the same Dovecot, started here on a throwaway trust space whose INBOX holds
200 messages. Run from the repository root::

    .venv/bin/python -m bench.imap_bench [--rounds 200]
"""

from __future__ import annotations

import argparse
import imaplib
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailstore import listing  # noqa: E402
from mailstore.config import Options  # noqa: E402
from mailstore.lmtp import LmtpClient  # noqa: E402
from mailstore.pool import ImapPool  # noqa: E402
from mailstore.service import DovecotService  # noqa: E402
from tests.mailstore_fixtures import TrustSpace, build, make_settings, open_tempdir  # noqa: E402
from webmail.mail.badge import Voucher  # noqa: E402

MESSAGES = 200
USER = "marie"


def _fill(space: TrustSpace) -> None:
    client = LmtpClient.for_settings(space.settings)
    for i in range(MESSAGES):
        day = 1 + i % 28
        raw = space.message(f"Résultats {i}", date=f"Mon, {day} Sep 2025 10:{i % 60:02d}:00 +0200")
        client.deliver(raw, "paul.durand@mss.test", [space.address(USER)])


def _imaplib_view(space: TrustSpace, login: str, secret: str) -> None:
    conn = imaplib.IMAP4_SSL("127.0.0.1", space.settings.imaps_port,
                             ssl_context=space.tls_context(), timeout=10)
    conn.login(login, secret)
    typ, data = conn.select("INBOX")
    total = int(data[0] or 0)
    conn.fetch(f"{max(1, total - 49)}:{total}", "(UID ENVELOPE FLAGS RFC822.SIZE INTERNALDATE)")
    conn.logout()


def _measure(view: Callable[[], None], rounds: int) -> list[float]:
    view()  # warm-up: opens the pooled session, loads Dovecot's indexes
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        view()
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def _report(name: str, timings: list[float]) -> float:
    ordered = sorted(timings)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    median = statistics.median(ordered)
    print(f"{name:<46} median {median:7.2f} ms   p95 {p95:7.2f} ms   (n={len(timings)})")
    return median


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    root = open_tempdir("mss-bench-")
    space = build(make_settings(root / "data"))
    service = DovecotService(space.settings, space.db, options=Options())
    service.start()
    pool = ImapPool.for_settings(space.settings)
    try:
        _fill(space)
        creds = service.master_credentials()
        address = space.address(USER)

        voucher = Voucher(space.settings.domain, b"\x00" * 32)

        def pooled_view() -> None:
            with pool.session(address) as session:
                newest = session.sorted_uids("INBOX")[:50]
                assert len(listing.rows(session, "INBOX", newest, voucher)) == 50

        pooled = _report("mailstore.pool (warm) — select + 50 list lines",
                         _measure(pooled_view, args.rounds))
        plain = _report("imaplib — TLS + login + select + 50 envelopes",
                        _measure(lambda: _imaplib_view(space, creds.login_for(address),
                                                       creds.secret), args.rounds))
        print(f"ratio imaplib / pool: {plain / pooled:.1f}x  "
              f"(sessions opened by the pool: {pool.opened})")
    finally:
        pool.close()
        service.stop()
        space.db.dispose()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
