"""Full-text search at 100,000 messages: the webmail's search in every folder against the same
search sent straight to Dovecot over IMAP (imapclient), measured in the same run, alternately,
so that a noisy shared machine weighs on both sides alike.

- ``webmail``: GET /courrier/<box>/recherche?q=…&portee=tous — page 1 (50 results) of the
  search in every folder, over HTTPS with a logged-in session on one keep-alive connection.
  The webmail runs in a process of its own (``bench.webmail --serve``).
- ``IMAP, same search``: one imapclient connection; per folder SELECT + ``UID SORT (DATE)
  UTF-8 UNDELETED OR SUBJECT <word> BODY <word> …``: the search the webmail sends, nothing
  else (``webmail.mail.fulltext.text_criteria`` builds both).
- ``IMAP, same work``: the same plus what the webmail also asks to show page 1: the Date of
  the newest 50 matches of each folder, then the list's fields of the 50 shown.

No full scan: Dovecot runs with ``fts_enforced = yes`` (checked with ``doveconf``), and every
message a SEARCH opens to read it is counted by Dovecot itself (the ``search_read_mail``
metric of ``mailstore.fts``, ``doveadm stats dump``): it must stay at 0 over every search of
the run (a scan of 100,000 messages would add 100,000). Every webmail search must also find
as many messages as the IMAP search.

The mailbox (``bench.search_corpus``) is built once under ``--data-dir`` (MULTIAPPEND, then
``doveadm index``) and reused by later runs with the same ``--messages``::

    .venv/bin/python -m bench.search --data-dir /var/tmp/mss-search [--messages 100000]
"""

from __future__ import annotations

import argparse
import json
import os
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imapclient import IMAPClient  # noqa: E402

from bench import search_corpus as corpus  # noqa: E402
from bench.webmail import Browser, _start_webmail  # noqa: E402
from certs.pki import Pki  # noqa: E402
from core.db import Database  # noqa: E402
from mailstore import fts  # noqa: E402
from mailstore.config import Options  # noqa: E402
from mailstore.credentials import master_credentials  # noqa: E402
from mailstore.imap import imaplib_of  # noqa: E402
from mailstore.listing import ITEMS  # noqa: E402
from mailstore.service import DovecotService  # noqa: E402
from tests.mailstore_fixtures import (  # noqa: E402
    PASSWORD,
    TrustSpace,
    _pair_paths,
    build,
    make_settings,
    publish_crl,
)
from webmail.mail import fulltext  # noqa: E402

USER = "marie"
PER_PAGE = 50
MARKER = "bench-search.json"
QUOTA_MB = 16_384
_TOTAL = re.compile(r'data-total="(\d+)"')


# ---------------------------------------------------------------------- the mailbox
def prepare(root: Path, count: int) -> tuple[TrustSpace, dict[str, Any]]:
    """The trust space under ``root``, its mailbox filled and indexed (reused if it was)."""
    marker = root / MARKER
    wanted = {"version": corpus.VERSION, "messages": count}
    if marker.is_file():
        built = json.loads(marker.read_text())
        if {k: built.get(k) for k in wanted} == wanted:
            return _reopen(root), built
        shutil.rmtree(root / "data", ignore_errors=True)
    elif root.exists() and any(root.iterdir()):
        sys.exit(f"{root} n'est pas vide et n'est pas un répertoire de ce banc d'essai")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)  # Dovecot's unprivileged processes traverse it (root runs)
    space = build(make_settings(root / "data", mailbox_quota_mb=QUOTA_MB))
    service = DovecotService(space.settings, space.db, options=Options())
    service.start()
    try:
        filled = fill(space, count)
        indexed = index(space)
    finally:
        service.stop()
    built = {**wanted, "fill_seconds": round(filled, 1), "index_seconds": round(indexed, 1),
             "built": time.strftime("%Y-%m-%d %H:%M")}
    marker.write_text(json.dumps(built))
    return space, built


def _reopen(root: Path) -> TrustSpace:
    settings = make_settings(root / "data", mailbox_quota_mb=QUOTA_MB)  # new free ports
    db = Database(settings.effective_database_url)
    space = TrustSpace(settings, db, Pki.load(settings.pki_dir), settings.domain)
    space.cards[USER] = _pair_paths(space, USER)
    with db.transaction() as session:
        publish_crl(space, session)  # the saved one may have expired since
    return space


def fill(space: TrustSpace, count: int, batch: int = 400) -> float:
    """APPEND the corpus, ``batch`` messages per MULTIAPPEND (RFC 3502) with LITERAL+."""
    start = time.perf_counter()
    pending: dict[str, list[corpus.Generated]] = {}
    with socket.create_connection(("127.0.0.1", space.settings.imaps_port)) as raw, \
            space.tls_context().wrap_socket(raw, server_hostname="localhost") as tls:
        reader = tls.makefile("rb")
        reader.readline()
        _command(tls, reader, b"a", f'LOGIN "{space.address(USER)}" "{PASSWORD}"'.encode())
        for name, _share in corpus.FOLDERS:
            if name not in ("INBOX", "Sent", "Drafts", "Trash"):
                _command(tls, reader, b"c", f'CREATE "{name}"'.encode())
        for number, generated in enumerate(corpus.messages(count), 1):
            pending.setdefault(generated.folder, []).append(generated)
            if len(pending[generated.folder]) >= batch or number == count:
                for name in list(pending):
                    if len(pending[name]) >= batch or number == count:
                        _append(tls, reader, name, pending.pop(name))
            if number % 10_000 == 0:
                print(f"  {number} messages ({time.perf_counter() - start:.0f} s)", flush=True)
        _command(tls, reader, b"z", b"LOGOUT")
    return time.perf_counter() - start


def _append(tls: ssl.SSLSocket, reader: Any, folder: str,
            items: list[corpus.Generated]) -> None:
    parts = [f'APPEND "{folder}"'.encode()]
    for item in items:
        when = item.when.strftime("%d-%b-%Y %H:%M:%S +0000")
        parts.append(b' (%s) "%s" {%d+}\r\n%s' % (" ".join(item.flags).encode(), when.encode(),
                                                  len(item.raw), item.raw))
    _command(tls, reader, b"p", b"".join(parts))


def _command(tls: ssl.SSLSocket, reader: Any, tag: bytes, command: bytes) -> None:
    tls.sendall(tag + b" " + command + b"\r\n")
    while True:
        line = reader.readline()
        if not line:
            raise ConnectionError("IMAP connection closed")
        if line.startswith(tag + b" "):
            if line.split()[1] != b"OK":
                raise RuntimeError(line.decode(errors="replace"))
            return


def doveadm(space: TrustSpace, *args: str, timeout: float = 7200) -> str:
    conf = space.settings.data_dir.resolve() / "dovecot" / "dovecot.conf"
    done = subprocess.run(["doveadm", "-c", str(conf), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"doveadm {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def index(space: TrustSpace, workers: int = 2) -> float:
    """Bring every folder's full-text index up to date (``doveadm index``, synchronous), two
    folders at a time, largest first (Xapian 1.5.5 indexes some 60 messages/s per process)."""
    start = time.perf_counter()
    names = [name for name, _share in sorted(corpus.FOLDERS, key=lambda f: -f[1])]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda name: doveadm(space, "index", "-u", space.address(USER), name),
                      names))
    return time.perf_counter() - start


# ---------------------------------------------------------------------- Dovecot's reads
def search_reads(space: TrustSpace) -> int:
    """How many messages SEARCH commands have opened and read since Dovecot started: the
    ``search_read_mail`` metric (mailstore.fts: lib-storage's mail_opened events with reason
    "search"). A search answered by the index opens none; a scan opens every message."""
    dump = doveadm(space, "stats", "dump")
    for line in dump.splitlines():
        fields = line.split("\t")
        if fields[:2] == [fts.SCAN_METRIC, "duration"]:
            return int(fields[2])
    raise RuntimeError(f"métrique {fts.SCAN_METRIC} absente de doveadm stats dump")


# ---------------------------------------------------------------------- the two sides
class Imap:
    """The baseline: one imapclient connection sending the same search over IMAP, logged in
    as the webmail logs in (so through the same index)."""

    def __init__(self, space: TrustSpace) -> None:
        self.client = IMAPClient("127.0.0.1", space.settings.imaps_port,
                                 ssl_context=space.tls_context(), timeout=120)
        # The webmail's login (mailstore.credentials): only its sessions search through the
        # index (mailstore.fts); a client logging in as itself gets Dovecot's exact scan.
        master = master_credentials(space.settings)
        self.client.login(master.login_for(space.address(USER)), master.secret)
        self.folders = [name for flags, _sep, name in self.client.list_folders()
                        if b"\\Noselect" not in flags]

    def search(self, criteria: list[str]) -> dict[str, list[int]]:
        found = {}
        for name in self.folders:
            self.client.select_folder(name)
            found[name] = list(reversed(self.client.sort(["DATE"], ["UNDELETED", *criteria])))
        return found

    def same_work(self, criteria: list[str]) -> int:
        found = self.search(criteria)
        dated = []
        for name, uids in found.items():
            if uids:
                self.client.select_folder(name)
                got = self.client.fetch(uids[:PER_PAGE], ["INTERNALDATE",
                                                          "BODY.PEEK[HEADER.FIELDS (DATE)]"])
                dated += [(data[b"INTERNALDATE"], name, uid) for uid, data in got.items()]
        dated.sort(reverse=True)
        page: dict[str, list[int]] = {}
        for _when, name, uid in dated[:PER_PAGE]:
            page.setdefault(name, []).append(uid)
        for name, uids in page.items():
            self.client.select_folder(name)
            imaplib_of(self.client).uid("FETCH", ",".join(map(str, uids)), ITEMS)
        return sum(len(uids) for uids in found.values())

    def warm(self) -> None:
        """What opening each folder in the webmail does once: UID SORT (DATE) ALL (Dovecot
        then keeps every message's date in its cache)."""
        for name in self.folders:
            self.client.select_folder(name)
            self.client.sort(["DATE"], ["ALL"])


def criteria_of(text: str) -> list[str]:
    return fulltext.text_criteria(fulltext.words(text))


# ---------------------------------------------------------------------- measuring
def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return (time.perf_counter() - start) * 1000, result


class Cpu:
    """CPU time spent on a search, which a loaded shared machine does not inflate as it does
    wall time: Dovecot's imap processes (children of its master named ``imap``), the webmail's
    process and this one (the HTTP or IMAP client), from /proc (10 ms ticks)."""

    def __init__(self, master: int, webmail: int) -> None:
        self.master, self.webmail = master, webmail
        self.tick = os.sysconf("SC_CLK_TCK")

    def _ticks(self, pid: int) -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14, 15)

    def sample(self) -> float:
        """Seconds of CPU so far: Dovecot's imap processes + the webmail + this process."""
        ticks = self._ticks(self.webmail)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
                head, rest = stat.rsplit(")", 1)
                if rest.split()[1] == str(self.master) and head.endswith("(imap"):
                    ticks += self._ticks(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
        return ticks / self.tick + time.process_time()


class Web:
    """The browser's keep-alive connection, opened again (untimed) before a request when it
    has been idle long enough for the server to have closed it (cheroot: 10 s), as a browser
    does after a pause; the IMAP sides of a slow query can take that long."""

    def __init__(self, browser: Browser) -> None:
        self.browser, self.last = browser, time.monotonic()

    def reconnect_if_idle(self) -> None:
        if time.monotonic() - self.last > 5:
            self.browser.conn.close()
            self.browser.conn.connect()

    def get(self, url: str) -> tuple[int, str]:
        try:
            return self.browser.request("GET", url)
        finally:
            self.last = time.monotonic()


def measure(space: TrustSpace, browser: Browser, imap: Imap, cpu: Cpu, rounds: int,
            warm_up: int) -> dict[str, Any]:
    web = Web(browser)
    box = _own_box(browser)
    queries = corpus.queries()
    timings: dict[str, list[float]] = {"webmail": [], "imap": [], "work": []}
    cpu_ms: dict[str, list[float]] = {"webmail": [], "imap": [], "work": []}
    by_kind: dict[str, list[float]] = {}
    scans: list[tuple[str, int]] = []
    mismatches = []
    for number in range(rounds + warm_up):  # the first ones warm up, not measured
        kind, text = queries[number % len(queries)]
        url = f"/courrier/{box}/recherche?" + urlencode({"q": text, "portee": "tous"})
        criteria = criteria_of(text)
        sides: list[tuple[str, Callable[[], Any]]] = [
            ("webmail", lambda url=url: web.get(url)),
            ("imap", lambda c=criteria: imap.search(c)),
            ("work", lambda c=criteria: imap.same_work(c))]
        if number % 2:
            sides.reverse()
        results: dict[str, Any] = {}
        before = search_reads(space)
        for side, call in sides:
            if side == "webmail":
                web.reconnect_if_idle()
            spent = cpu.sample()
            elapsed, results[side] = _timed(call)
            spent = (cpu.sample() - spent) * 1000
            if number >= warm_up:
                timings[side].append(elapsed)
                cpu_ms[side].append(spent)
                if side == "webmail":
                    by_kind.setdefault(kind, []).append(elapsed)
        read = search_reads(space) - before
        if read:
            scans.append((text, read))
        status, page = results["webmail"]
        shown = _TOTAL.search(page)
        expected = sum(len(uids) for uids in results["imap"].values())
        if status != 200 or shown is None or int(shown.group(1)) != expected:
            mismatches.append((text, status, shown.group(1) if shown else None, expected))
    return {"timings": timings, "cpu": cpu_ms, "by_kind": by_kind, "scans": scans,
            "mismatches": mismatches}


def _own_box(browser: Browser) -> int:
    status, page = browser.request("GET", "/courrier/")
    found = re.search(r'href="/courrier/(\d+)', page)
    assert found, f"pas de boîte dans /courrier/ ({status})"
    return int(found.group(1))


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, -(-len(ordered) * 95 // 100) - 1)]


def report(measured: dict[str, Any], built: dict[str, Any], enforced: bool,
           ) -> dict[str, Any]:
    t = measured["timings"]
    web, imap, work = (percentiles(t[k]) for k in ("webmail", "imap", "work"))
    print(f"{'webmail, tous les dossiers (HTTPS, page 1)':<46} p50 {web[0]:7.1f} ms   "
          f"p95 {web[1]:7.1f} ms   (n={len(t['webmail'])})")
    print(f"{'IMAP, same search (SELECT + UID SORT)':<46} p50 {imap[0]:7.1f} ms   "
          f"p95 {imap[1]:7.1f} ms")
    print(f"{'IMAP, same work (+ dates + page FETCH)':<46} p50 {work[0]:7.1f} ms   "
          f"p95 {work[1]:7.1f} ms")
    for kind, values in sorted(measured["by_kind"].items()):
        p50, p95 = percentiles(values)
        print(f"  webmail, {kind:<36} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")
    ratio = (web[0] / imap[0], web[1] / imap[1])
    ratio_work = (web[0] / work[0], web[1] / work[1])
    print(f"ratio webmail / IMAP same search               p50 {ratio[0]:5.2f}x   "
          f"p95 {ratio[1]:5.2f}x")
    print(f"ratio webmail / IMAP same work                 p50 {ratio_work[0]:5.2f}x   "
          f"p95 {ratio_work[1]:5.2f}x")
    c = measured["cpu"]
    cpu = {k: percentiles(c[k]) for k in ("webmail", "imap", "work")}
    for key, label in (("webmail", "webmail"), ("imap", "IMAP, same search"),
                       ("work", "IMAP, same work")):
        print(f"{'CPU per search, ' + label:<46} p50 {cpu[key][0]:7.1f} ms   "
              f"p95 {cpu[key][1]:7.1f} ms")
    cpu_ratio = (cpu["webmail"][0] / max(cpu["imap"][0], 1e-3),
                 cpu["webmail"][1] / max(cpu["imap"][1], 1e-3))
    print(f"ratio of CPU webmail / IMAP same search        p50 {cpu_ratio[0]:5.2f}x   "
          f"p95 {cpu_ratio[1]:5.2f}x")
    read = sum(count for _text, count in measured["scans"])
    scan = bool(read) or not enforced
    print(f"no full scan: fts_enforced={'yes' if enforced else 'NO'}, {read} message(s) "
          f"opened by a SEARCH over {sum(len(v) for v in t.values())} searches "
          f"-> {'SCAN' if scan else 'ok'}")
    for text, count in measured["scans"]:
        print(f"SCAN {text!r}: {count} message(s) read")
    for text, status, shown, expected in measured["mismatches"]:
        print(f"MISMATCH {text!r}: HTTP {status}, webmail {shown}, IMAP {expected}")
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPU, load average {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f} (1 / 5 / 15 min) at the end")
    targets = {"p95_le_100ms": web[1] <= 100, "ratio_p95_le_2": ratio[1] <= 2}
    print(f"targets: p95 <= 100 ms {'met' if targets['p95_le_100ms'] else 'MISSED'}; "
          f"p95 ratio <= 2 {'met' if targets['ratio_p95_le_2'] else 'MISSED'}")
    result = {"messages": built["messages"], "fill_seconds": built.get("fill_seconds"),
              "index_seconds": built.get("index_seconds"),
              "webmail_ms": web, "imap_ms": imap, "imap_work_ms": work,
              "ratio": ratio, "ratio_work": ratio_work, "cpu_ms": cpu, "cpu_ratio": cpu_ratio,
              "scan": scan, "search_reads": read,
              "mismatches": len(measured["mismatches"]), "targets": targets,
              "load": load, "cpus": os.cpu_count()}
    print("RESULT " + json.dumps(result))
    return result


def run(args: argparse.Namespace) -> int:
    root = Path(args.data_dir).resolve()
    started = time.perf_counter()
    space, built = prepare(root, args.messages)
    print(f"{args.messages} messages: filled in {built.get('fill_seconds')} s, indexed in "
          f"{built.get('index_seconds')} s (built {built.get('built')}, "
          f"ready after {time.perf_counter() - started:.0f} s)", flush=True)
    service = DovecotService(space.settings, space.db, options=Options())
    service.start()
    child = None
    try:
        enforced = _enforced(space)
        print(f"index check: {index(space):.1f} s", flush=True)
        imap = Imap(space)
        imap.warm()
        child, port = _start_webmail(space)
        browser = Browser(space, port)
        browser.login()
        warm_up = len(corpus.queries()) if args.warm_up is None else args.warm_up
        cpu = Cpu(service._proc.pid if service._proc else 0, child.pid)
        measured = measure(space, browser, imap, cpu, args.rounds, warm_up)
        result = report(measured, built, enforced)
        imap.client.logout()
    finally:
        if child is not None:
            child.send_signal(signal.SIGTERM)
            child.wait(30)
        service.stop()
        space.db.dispose()
    return 1 if result["scan"] or result["mismatches"] else 0


def _enforced(space: TrustSpace) -> bool:
    conf = space.settings.data_dir.resolve() / "dovecot" / "dovecot.conf"
    done = subprocess.run(["doveconf", "-c", str(conf), "-n", "plugin"], capture_output=True,
                          text=True, check=False)
    return bool(re.search(r"^\s*fts_enforced = yes$", done.stdout, re.M))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", required=True,
                        help="where the mailbox is built, and reused by the next runs")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=300, help="searches measured per side")
    parser.add_argument("--warm-up", type=int, default=None,
                        help="searches run first and not measured (default: each query once)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="build (or check) the indexed mailbox and stop")
    args = parser.parse_args(argv)
    # Stopped from outside (a test's timeout, Ctrl-C): Dovecot and the webmail go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.prepare_only:
        _space, built = prepare(Path(args.data_dir).resolve(), args.messages)
        print(json.dumps(built))
        return
    sys.exit(run(args))


if __name__ == "__main__":
    main()
