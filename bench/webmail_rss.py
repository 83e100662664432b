"""The webmail's resident memory under load (issue 19): does it stay flat, and if not, why?

One command starts Dovecot on a throwaway trust space (a few messages in marie's INBOX), then
one webmail process per *variant* (each its own cheroot + Flask, as ``mss run --role webmail``
runs it), and drives the same request mix into each from this (client) process, one thread
per variant, all at once so that the machine's noise falls on every variant alike. Every few
seconds it samples each webmail's RSS (process and descendants); at the end it prints, after
the warm-up, the slope in KB/min and in bytes per request::

    .venv/bin/python -m bench.webmail_rss [--requests 6000] [--variants base jemalloc]
                                          [--mix anon,inbox,read] [--tracemalloc]

Request kinds (``--mix``, or per variant ``name@kind+kind``):
  ``anon``  GET /connexion on a new TLS connection, no cookie (what bench/soak.py's web users do)
  ``anonka`` the same on one keep-alive connection (no cookie: a new web session each time)
  ``static`` GET of a static file on a new TLS connection (TLS and cheroot alone, no session)
  ``inbox`` GET /courrier/<box> logged in (card), on one keep-alive connection
  ``read``  GET /courrier/<box>/message/<uid>, logged in, keep-alive
  ``login`` a new connection with the card: GET /connexion, POST /connexion/carte, the inbox,
            POST /deconnexion (a new web session and its IMAP work each time)
Server variants:
  ``base``     the webmail as shipped (pyOpenSSL adapter, glibc malloc, the environment's)
  ``cycle``    cheroot's own connection class, in a reference cycle (the webmail before issue 19)
  ``jemalloc`` the same with LD_PRELOAD=libjemalloc.so.2 (Debian libjemalloc2)
  ``arena2``   the same with MALLOC_ARENA_MAX=2
  ``stdssl``   cheroot's builtin adapter (Python's ``ssl``; the card must chain, it does here)
  ``plain``    no TLS at all (the card's PEM injected into the WSGI environ, bench only)

``--tracemalloc``: each webmail traces Python allocations; the Python heap at warm-up end and
at the end, and the top growth between the two, are printed. glibc's ``mallinfo2`` (bytes in
use vs free in the arenas) is printed at the same two points: bytes in use that grow are a leak
(Python or native), free bytes that grow while those in use stay are fragmentation.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.mailstore_fixtures import (  # noqa: E402
    PASSWORD,
    TrustSpace,
    build,
    free_port,
    make_settings,
    open_tempdir,
)

USER = "marie"
KINDS = ("anon", "anonka", "static", "inbox", "read", "login")
SERVERS = ("base", "cycle", "jemalloc", "arena2", "stdssl", "plain")
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
_TOKEN = re.compile(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"')
_BOX = re.compile(r"/courrier/(\d+)")
STATIC = "/static/favicon.svg"


# ---------------------------------------------------------------------- the webmail (child)
class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo() -> dict[str, int]:
    """glibc's arena statistics (bytes), {} without glibc or under another allocator."""
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return {}
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
    except (OSError, AttributeError):
        return {}
    info = libc.mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free": info.fordblks,
            "arena": info.arena + info.hblkhd}


def serve(data_dir: str, options: str) -> None:
    """``--serve``: run one webmail until SIGTERM, print its port; SIGUSR1 writes its stats."""
    import tracemalloc

    from core.db import Database
    from core.settings import Settings
    from webmail.service import WebmailService

    opts = json.loads(options)
    if opts["tracemalloc"]:
        tracemalloc.start(1)
    settings = Settings.load(data_dir=data_dir, environ={}, **opts["settings"])
    service = WebmailService(settings, Database(settings.effective_database_url),
                             test_config={"RATE_LOGIN": "100000 per minute"})
    if opts["server"] == "cycle":
        from cheroot.server import HTTPConnection

        from webmail import service as webmail_service

        webmail_service._Server.ConnectionClass = HTTPConnection
    if opts["server"] in ("stdssl", "plain"):
        _patch_adapter(service, opts["server"], settings.pki_dir, opts["card_pem"])
    stop = threading.Event()
    first: list[Any] = []

    def stats(*_: object) -> None:
        out: dict[str, Any] = {"malloc": _mallinfo(), "threads": threading.active_count()}
        if tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            out["python_heap"] = tracemalloc.get_traced_memory()[0]
            if first:
                out["top"] = [str(s) for s in snapshot.compare_to(first[0], "lineno")[:12]]
            else:
                first.append(snapshot)
        with open(opts["stats"], "a", encoding="utf-8") as f:
            f.write(json.dumps(out) + "\n")

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, stats)
    service.start()
    print(service.port, flush=True)
    stop.wait()
    service.stop()


def _patch_adapter(service: Any, kind: str, pki: Path, card_pem: str) -> None:
    """``stdssl``: cheroot's builtin adapter; ``plain``: none, the card given by the client's
    ``X-Bench-Card`` header (this bench only: a plain port trusts whatever it is told)."""
    from cheroot.ssl.builtin import BuiltinSSLAdapter
    from cheroot.wsgi import Server

    app = service.app.wsgi_app

    def plain_app(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.url_scheme"], environ["HTTPS"] = "https", "on"
        if environ.get("HTTP_X_BENCH_CARD"):
            environ["SSL_CLIENT_CERT"] = card_pem
        return app(environ, start_response)

    if kind == "plain":
        service.app.wsgi_app = plain_app
    original = Server.prepare

    def prepare(server: Any) -> None:
        if kind == "plain":
            server.ssl_adapter = None
        else:
            adapter = BuiltinSSLAdapter(str(pki / "server.crt"), str(pki / "server.key"))
            adapter.context.verify_mode = ssl.CERT_OPTIONAL
            adapter.context.load_verify_locations(str(pki / "ca.pem"))
            server.ssl_adapter = adapter
        original(server)

    Server.prepare = prepare  # type: ignore[method-assign, assignment]


# ---------------------------------------------------------------------- the client
@dataclass
class Variant:
    name: str
    server: str
    kinds: tuple[str, ...]
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    stats: Path = Path()
    done: int = 0
    errors: list[str] = field(default_factory=list)
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # t, done, RSS KB

    @property
    def label(self) -> str:
        return f"{self.server}@{'+'.join(self.kinds)}"


def _parse_variants(specs: list[str], mix: tuple[str, ...]) -> list[Variant]:
    variants = []
    for spec in specs:
        server, _, kinds = spec.partition("@")
        chosen = tuple(kinds.split("+")) if kinds else mix
        if server not in SERVERS or not set(chosen) <= set(KINDS):
            raise SystemExit(f"variante inconnue : {spec} (serveurs {SERVERS}, types {KINDS})")
        variants.append(Variant(spec, server, chosen))
    return variants


def _start(space: TrustSpace, variant: Variant, root: Path, tracemalloc: bool) -> None:
    env = dict(os.environ)
    if variant.server == "jemalloc":
        if not Path(JEMALLOC).exists():
            raise SystemExit(f"{JEMALLOC} absent : apt-get install libjemalloc2")
        env["LD_PRELOAD"] = JEMALLOC
    elif variant.server == "arena2":
        env["MALLOC_ARENA_MAX"] = "2"
    variant.stats = root / f"stats-{variant.port}-{id(variant)}.jsonl"
    crt, _key = space.cards[USER]
    options = {"settings": {"imaps_port": space.settings.imaps_port, "web_port": free_port(),
                            "listen_address": "127.0.0.1", "hostname": "localhost",
                            "demo_password": PASSWORD},
               "server": variant.server, "tracemalloc": tracemalloc,
               "stats": str(variant.stats), "card_pem": crt.read_text()}
    variant.proc = subprocess.Popen(
        [sys.executable, "-m", "bench.webmail_rss", "--serve", str(space.settings.data_dir),
         json.dumps(options)], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    assert variant.proc.stdout is not None
    variant.port = int(variant.proc.stdout.readline())


class Client:
    """One browser: a keep-alive connection with the card certificate and its cookie."""

    def __init__(self, space: TrustSpace, variant: Variant, card: bool) -> None:
        self.space, self.variant, self.card = space, variant, card
        self.cookie = ""
        self.origin = f"https://127.0.0.1:{variant.port}"
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        if self.variant.server == "plain":
            return http.client.HTTPConnection("127.0.0.1", self.variant.port, timeout=30)
        context = self.space.tls_context(USER if self.card else None)
        context.check_hostname = False
        return http.client.HTTPSConnection("127.0.0.1", self.variant.port, context=context,
                                           timeout=30)

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str, str]:
        headers = {"Referer": self.origin + path}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if self.card and self.variant.server == "plain":
            headers["X-Bench-Card"] = "1"
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read().decode("utf-8", "replace")
        for value in response.headers.get_all("Set-Cookie") or []:
            self.cookie = value.split(";", 1)[0]
        return response.status, data, response.headers.get("Location") or ""

    def login(self) -> int:
        """Log in with the card; the mailbox id the webmail lands on."""
        _status, page, _ = self.request("GET", "/connexion")
        token = _TOKEN.search(page)
        assert token, "pas de jeton CSRF sur /connexion"
        status, _, location = self.request("POST", "/connexion/carte",
                                           f"csrf_token={token.group(1)}")
        assert status == 302, f"connexion par carte refusée ({status})"
        found = _BOX.search(location)
        assert found, f"pas de boîte après la connexion ({status} {location})"
        return int(found.group(1))

    def logout(self, box: int) -> None:
        _status, page, _ = self.request("GET", f"/courrier/{box}")
        token = _TOKEN.search(page)
        assert token, "pas de jeton CSRF sur la boîte"
        status, _, _ = self.request("POST", "/deconnexion", f"csrf_token={token.group(1)}")
        assert status == 302, status

    def close(self) -> None:
        self.conn.close()


def drive(space: TrustSpace, variant: Variant, count: int, uid: int,
          stop: threading.Event) -> None:
    """``count`` requests of ``variant.kinds`` in turn (a ``login`` counts for its four)."""
    user = Client(space, variant, card=True)
    box = user.login()
    anon_ka = Client(space, variant, card=False)
    i = 0
    while variant.done < count and not stop.is_set():
        kind = variant.kinds[i % len(variant.kinds)]
        i += 1
        try:
            if kind == "anon":
                anon = Client(space, variant, card=False)
                status, page, _ = anon.request("GET", "/connexion")
                anon.close()
                assert status == 200 and "<form" in page, status
            elif kind == "anonka":
                anon_ka.cookie = ""  # a visitor without cookie, on a kept connection
                status, page, _ = anon_ka.request("GET", "/connexion")
                assert status == 200 and "<form" in page, status
            elif kind == "static":
                anon = Client(space, variant, card=False)
                status, _, _ = anon.request("GET", STATIC)
                anon.close()
                assert status == 200, status
            elif kind == "inbox":
                status, _, _ = user.request("GET", f"/courrier/{box}")
                assert status == 200, status
            elif kind == "read":
                status, _, _ = user.request("GET", f"/courrier/{box}/message/{uid}")
                assert status == 200, status
            else:
                fresh = Client(space, variant, card=True)
                fresh.logout(fresh.login())
                fresh.close()
                variant.done += 3
        except Exception as exc:  # counted and reported; the run goes on
            variant.errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:200])
            user.close()
            user = Client(space, variant, card=True)
            box = user.login()
        variant.done += 1
    user.close()
    anon_ka.close()


def rss_kb(pid: int) -> float:
    """RSS of ``pid`` and its descendants, in KB."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents[int(entry.name)] = int(stat[1])
        rss[int(entry.name)] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    total = 0.0
    for child, kb in rss.items():
        ancestor, hops = child, 0
        while ancestor != pid and ancestor in parents and hops < 50:
            ancestor, hops = parents[ancestor], hops + 1
        if ancestor == pid:
            total += kb
    return total


def _fill(space: TrustSpace, count: int) -> int:
    """``count`` messages in the user's INBOX; the UID of one of them."""
    imap = space.imaps()
    imap.login(space.address(USER), PASSWORD)
    for i in range(count):
        body = "Bonjour,\nvoici le compte rendu.\n" + "Ligne de compte rendu.\n" * 40
        imap.append("INBOX", None, None, space.message(f"Compte rendu no {i}", body=body))
    imap.select("INBOX")
    _typ, data = imap.uid("SEARCH", "ALL")
    imap.logout()
    return int(data[0].split()[count // 2])


def _signal_stats(variants: list[Variant]) -> None:
    """Ask every webmail for its stats; wait (up to a minute) until each has written them."""
    expected = {v.name: len(_read_stats(v)) + 1 for v in variants}
    for v in variants:
        if v.proc is not None:
            v.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
            len(_read_stats(v)) < expected[v.name] for v in variants):
        time.sleep(0.2)


def _read_stats(variant: Variant) -> list[dict[str, Any]]:
    try:
        lines = variant.stats.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]


def report(variants: list[Variant], warmup: int) -> None:
    print(f"\n{'variant':<28}{'requêtes':>9}{'err':>5}{'RSS chauffé':>13}{'RSS fin':>10}"
          f"{'pente':>14}{'par requête':>14}")
    for v in variants:
        warm = [s for s in v.samples if s[1] >= warmup]
        if len(warm) < 3:
            print(f"{v.label:<28} pas assez de mesures après la chauffe ({len(warm)})")
            continue
        by_time = statistics.linear_regression([s[0] for s in warm], [s[2] for s in warm])
        by_count = statistics.linear_regression([s[1] for s in warm], [s[2] for s in warm])
        minutes = (warm[-1][0] - warm[0][0]) / 60
        rate = (warm[-1][1] - warm[0][1]) / max(minutes, 1e-9)
        print(f"{v.label:<28}{v.done:>9}{len(v.errors):>5}{warm[0][2] / 1024:>10.1f} Mo"
              f"{warm[-1][2] / 1024:>7.1f} Mo{by_time.slope * 60:>+9.0f} Ko/min"
              f"{by_count.slope * 1024:>+9.0f} o/req   ({rate:.0f} req/min, "
              f"{minutes:.1f} min après chauffe)")
        for error in v.errors[:3]:
            print(f"    erreur : {error}")
        stats = _read_stats(v)
        if len(stats) >= 2:
            before, after = stats[0], stats[-1]
            for key in ("in_use", "free", "arena"):
                if key in before.get("malloc", {}):
                    print(f"    malloc {key:<7} {before['malloc'][key] / 2**20:7.1f} → "
                          f"{after['malloc'][key] / 2**20:7.1f} Mo")
            if "python_heap" in after:
                print(f"    tas Python     {before['python_heap'] / 2**20:7.1f} → "
                      f"{after['python_heap'] / 2**20:7.1f} Mo ; threads "
                      f"{before['threads']} → {after['threads']}")
                for line in after.get("top", [])[:8]:
                    print(f"      {line}")


def _terminate(*_: object) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        serve(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000, help="per variant")
    parser.add_argument("--warmup", type=float, default=0.25,
                        help="share of the requests before the slope is measured")
    parser.add_argument("--variants", nargs="+", default=["base"],
                        help=f"server[@kind+kind…], servers: {', '.join(SERVERS)}")
    parser.add_argument("--mix", default="anon,inbox,read",
                        help=f"request kinds in turn: {', '.join(KINDS)}")
    parser.add_argument("--interval", type=float, default=3.0, help="RSS sampling (s)")
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args(argv)
    variants = _parse_variants(args.variants, tuple(args.mix.split(",")))

    from mailstore.config import Options
    from mailstore.service import DovecotService

    signal.signal(signal.SIGTERM, _terminate)  # a timeout(1) still stops Dovecot
    root = open_tempdir("mss-bench-rss-")
    space = build(make_settings(root / "data"))
    dovecot = DovecotService(space.settings, space.db, options=Options())
    dovecot.start()
    stop = threading.Event()
    try:
        uid = _fill(space, 30)
        for v in variants:
            _start(space, v, root, args.tracemalloc)
        print(f"{len(variants)} webmail(s) : " + ", ".join(
            f"{v.label} (pid {v.proc.pid if v.proc else 0})" for v in variants), flush=True)
        threads = [threading.Thread(target=drive, args=(space, v, args.requests, uid, stop),
                                    daemon=True) for v in variants]
        start = time.monotonic()
        for t in threads:
            t.start()
        warmup = int(args.requests * args.warmup)
        warm_signalled = False
        deadline = start + args.max_minutes * 60
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            now = time.monotonic() - start
            for v in variants:
                assert v.proc is not None
                v.samples.append((now, v.done, rss_kb(v.proc.pid)))
            if not warm_signalled and all(v.done >= warmup for v in variants):
                warm_signalled = True
                _signal_stats(variants)
            time.sleep(args.interval)
        stop.set()
        for t in threads:
            t.join(60)
        _signal_stats(variants)
        report(variants, warmup)
        return 0 if not any(v.errors for v in variants) else 1
    finally:
        stop.set()
        for v in variants:
            if v.proc is not None:
                v.proc.send_signal(signal.SIGTERM)
                try:
                    v.proc.wait(20)
                except subprocess.TimeoutExpired:
                    v.proc.kill()
        dovecot.stop()
        space.db.dispose()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
