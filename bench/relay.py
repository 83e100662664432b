"""Relay benchmark (not a test): ``.venv/bin/python bench/relay.py [--messages N] [--against REV]``.

Prints, in one run, the unavoidable parts of relaying one 10 KB message and the relay's own
rates, with the ratios the issue sets as targets:

- in-process sign+encrypt of a 10 KB message (``gateway.accept.protection.protect``);
- one durable write (a 10 KB row committed in SQLite WAL, synchronous=FULL);
- a bare LMTP client's delivery rate into the same Dovecot, of the same bytes the relay delivers
  (its signed local form; INBOX + the sender's Sent copy in one transaction, as the relay
  delivers them), with as many threads as the relay's workers (``BENCH_WORKERS``, default 4);
- a do-nothing aiosmtpd (STARTTLS, AUTH PLAIN accepted, DATA → 250) with the same client:
  aiosmtplib, ``--sessions`` concurrent sessions;
- the relay (a ``tests.gateway_runner`` process): accepted rate and CPU per message for
  10 KB messages asking sign+encrypt (listeners only), then the delivered rate draining that
  queue (workers only); then a few 1 MB messages through both servers.

``--against REV`` (a git revision, e.g. the commit before a change) also runs REV's gateway, from a
temporary ``git worktree``, on the same data, client and machine, alternating the two (new, old,
new, old) so that the shared machine's noise falls on both; it prints both accepted rates and
CPU per message, and their ratios.

Local recipients receive the signed form (the hop encryption only exists towards peers), so
the relay's per-message crypto here is sign + verify (the reader's Authentication-Results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
from sqlalchemy import select, text  # noqa: E402

from core.db import Database  # noqa: E402
from gateway.accept import protection  # noqa: E402
from mailstore.lmtp import LmtpClient  # noqa: E402
from spool import queue as q  # noqa: E402
from tests.gateway_fixtures import build_operator  # noqa: E402
from tests.mailstore_fixtures import (  # noqa: E402
    PASSWORD,
    TEST_OPTIONS,
    TrustSpace,
    free_port,
    open_tempdir,
)

MARIE, PAUL = "marie.martin@mss.test", "paul.durand@mss.test"
TICK = os.sysconf("SC_CLK_TCK")
WORKERS = int(os.environ.get("BENCH_WORKERS", "4"))  # the gateway's delivery threads


def message(size: int, protect: bool = True) -> bytes:
    head = (f"From: {MARIE}\r\nTo: {PAUL}\r\nSubject: banc\r\nMessage-ID: "
            f"<{uuid.uuid4().hex}@mss.test>\r\n" + ("MSS-Security: sign, encrypt\r\n"
                                                    if protect else "") + "\r\n")
    line = "Compte rendu de consultation, ligne de texte ordinaire pour le banc.\r\n"
    return (head + line * max(1, size // len(line))).encode()


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of its running descendants (a group of gateway processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / TICK
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += cpu_seconds(int(child))
            except FileNotFoundError:  # gone meanwhile
                continue
    return total


# ---------------------------------------------------------------------- unavoidable parts
def crypto_cost(space, count: int = 50) -> float:  # type: ignore[no-untyped-def]
    """CPU seconds per sign+encrypt of a 10 KB message."""
    from gateway.accept.keys import KeyRing

    keys = KeyRing(space.settings.secret())
    with space.db.transaction() as session:
        signer = keys.signer(session, MARIE)
        cert = keys.signer(session, PAUL)[0]  # type: ignore[index]
    both = protection.Protection(sign=True, encrypt=True)
    raw = message(10_240, protect=False)
    start = time.process_time()
    for _ in range(count):
        protection.protect(raw, both, signer=signer, recipients=[cert])
    return (time.process_time() - start) / count


def durable_write_cost(tmp: Path, count: int = 200) -> tuple[float, float]:
    """(wall, CPU) seconds per committed 10 KB row, SQLite WAL synchronous=FULL."""
    db = Database(f"sqlite:///{tmp / 'bench.db'}")
    with db.transaction() as s:
        s.execute(text("CREATE TABLE IF NOT EXISTS m (id INTEGER PRIMARY KEY, raw BLOB)"))
    blob = os.urandom(10_240)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        with db.transaction() as s:
            s.execute(text("INSERT INTO m (raw) VALUES (:raw)"), {"raw": blob})
    result = ((time.perf_counter() - wall) / count, (time.process_time() - cpu) / count)
    db.dispose()
    return result


def queued_form(space) -> bytes:  # type: ignore[no-untyped-def]
    """The local form of a message the relay accepted (signed, traced, sealed): what its
    workers hand to LMTP, so that the bare client delivers the same bytes."""
    from spool.models import QueuedMessage

    with space.db.read() as session:
        raw = session.scalar(select(QueuedMessage.raw_local).limit(1))
    assert raw, "aucun message en file"
    return bytes(raw)


def bare_lmtp_rate(space, count: int, threads: int,  # type: ignore[no-untyped-def]
                   raw: bytes | None = None) -> float:
    """Messages per second, INBOX + Sent copy per message, ``threads`` clients."""
    client = LmtpClient.for_settings(space.settings)
    raw = raw or message(10_240, protect=False)
    todo = list(range(count))

    def run() -> None:
        while todo:
            todo.pop()
            client.deliver(raw, MARIE, [PAUL, "marie.martin+Sent@mss.test"])

    workers = [threading.Thread(target=run) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return count / (time.perf_counter() - start)


# ---------------------------------------------------------------------- SMTP client
async def blast(port: int, context: ssl.SSLContext, count: int, sessions: int,
                size: int, on_start: Callable[[], None] = lambda: None) -> float:
    """Messages per second through ``sessions`` aiosmtplib sessions (STARTTLS, AUTH). The
    clock (and ``on_start``, the server CPU reading) starts once every session has logged
    in: logins (argon2, ~0.2 s CPU each on purpose) are not a per-message cost."""
    todo = [message(size) for _ in range(count)]
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True,
                               tls_context=context, timeout=120) for _ in range(sessions)]

    async def login(smtp: aiosmtplib.SMTP) -> None:
        await smtp.connect()
        await smtp.login(MARIE, PASSWORD)

    async def send(smtp: aiosmtplib.SMTP) -> None:
        while todo:
            await smtp.sendmail(MARIE, [PAUL], todo.pop())
        await smtp.quit()

    await asyncio.gather(*(login(c) for c in clients))
    on_start()
    start = time.perf_counter()
    await asyncio.gather(*(send(c) for c in clients))
    return count / (time.perf_counter() - start)


def serve_null(port: int, cert: str, key: str) -> None:
    """The do-nothing aiosmtpd (run in its own process: ``--serve-null``); several such
    processes share the port (SO_REUSEPORT), as the gateway's do."""
    from aiosmtpd.smtp import SMTP, AuthResult

    class Null:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 2.0.0 Ok"

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()

    def smtp() -> SMTP:
        return SMTP(Null(), hostname="127.0.0.1", tls_context=context, require_starttls=True,
                    auth_require_tls=True, authenticator=lambda *a: AuthResult(success=True),
                    data_size_limit=None)

    loop.run_until_complete(loop.create_server(smtp, "127.0.0.1", port, reuse_port=True))
    print("ready", flush=True)
    loop.run_forever()


def spawn(args: list[str], code: Path = ROOT) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.Popen([sys.executable, *args], cwd=code, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode()


def gateway(space, workers: int, port: int,  # type: ignore[no-untyped-def]
            code: Path = ROOT, processes: int = 1) -> subprocess.Popen[bytes]:
    """A gateway process on ``space``'s data, running the code checked out in ``code``;
    ``processes`` > 1: the group of ``mss run`` (``gateway.processes``), sharing the port."""
    s = space.settings
    overrides = {**({"gateway_processes": processes} if processes > 1 else {}),
                 **({"database_url": s.database_url} if s.database_url else {}),
                 "submission_port": port, "submissions_port": 0, "relay_port": 0,
                 "metrics_port": 0, "hostname": "localhost", "security_policy": "sign",
                 "rate_limit_per_minute": 0, "queue_workers": workers,
                 "max_message_size": 5_000_000, "imap_port": s.imap_port,
                 "imaps_port": s.imaps_port,
                 # the demo password over SMTP: the bench is about the relay, not the login
                 "imap_smtp_web_password": "true"}
    proc, line = spawn(["-m", "tests.gateway_runner", str(s.data_dir),
                        *(f"{k}={v}" for k, v in overrides.items())], code)
    assert line.startswith("{"), "la passerelle n'a pas démarré"
    return proc


def measure_smtp(proc: subprocess.Popen[bytes], port: int, context: ssl.SSLContext,
                 count: int, sessions: int, size: int) -> tuple[float, float]:
    """(messages/s, server CPU seconds per message), after the logins."""
    before: list[float] = []
    rate = asyncio.run(blast(port, context, count, sessions, size,
                             lambda: before.append(cpu_seconds(proc.pid))))
    return rate, (cpu_seconds(proc.pid) - before[0]) / count


def drain_rate(space, proc: subprocess.Popen[bytes], count: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while True:
        with space.db.read() as session:
            if q.depth(session) == 0:
                return count / (time.perf_counter() - start)
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--big", type=int, default=5, help="1 MB messages to time")
    parser.add_argument("--serve-null", nargs=3, metavar=("PORT", "CERT", "KEY"))
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)),
                        help="N of the 1-vs-N processes comparison (default: the cores)")
    parser.add_argument("--scaling-only", action="store_true",
                        help="only the 1-vs-N processes comparison (issue #19)")
    parser.add_argument("--postgres", action="store_true",
                        help="the operator's database on a throwaway PostgreSQL (tests/pg.py)")
    parser.add_argument("--against", metavar="REV",
                        help="also measure the gateway of this git revision (before/after)")
    args = parser.parse_args()
    if args.serve_null:
        serve_null(int(args.serve_null[0]), args.serve_null[1], args.serve_null[2])
        return
    run(args.messages, args.sessions, args.big, args.against, processes=args.processes,
        scaling_only=args.scaling_only, postgres=args.postgres)


def checkout(rev: str, parent: Path) -> Path:
    """REV's tree in a temporary git worktree under ``parent`` (removed with it)."""
    where = parent / "against"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(where), rev],
                   check=True)
    return where


def run(count: int, sessions: int, big: int, against: str | None = None, *,
        processes: int = 1, scaling_only: bool = False, postgres: bool = False) -> None:
    from mailstore.service import DovecotService
    from tests.pg import TempPostgres

    root = open_tempdir("mss-bench-")
    pg = TempPostgres() if postgres else None
    url = pg.start().rsplit("/", 1)[0] + "/postgres" if pg is not None else ""
    space = build_operator(root, "mss.test", "Banc", queue_workers=4,
                           **({"database_url": url} if url else {}))
    dovecot = DovecotService(space.settings, space.db, options=TEST_OPTIONS)
    dovecot.start()
    context = space.tls_context()
    context.check_hostname = False
    old = checkout(against, root) if against else None
    try:
        if not scaling_only:
            report(space, root, context, count, sessions, big, old)
        postmaster = (int((pg.datadir / "postmaster.pid").read_text().split()[0])
                      if pg is not None else None)
        scaling(space, context, count, sessions, processes, postmaster)
    finally:
        if pg is not None:
            space.db.dispose()
            pg.stop()
        if old is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                           check=False)
        dovecot.stop()
        space.db.dispose()
        shutil.rmtree(root, ignore_errors=True)


def accepted_by(space, code: Path, port: int, context: ssl.SSLContext,  # type: ignore[no-untyped-def]
                count: int, sessions: int) -> tuple[float, float]:
    """(accepted messages/s, CPU per message) of the gateway in ``code`` (listeners only)."""
    relay = gateway(space, 0, port, code)
    try:
        return measure_smtp(relay, port, context, count, sessions, 10_240)
    finally:
        relay.terminate()
        relay.wait()


def null_group(space: TrustSpace, port: int, processes: int) -> list[subprocess.Popen[bytes]]:
    pki = space.settings.pki_dir
    return [spawn([str(Path(__file__)), "--serve-null", str(port), str(pki / "server.crt"),
                   str(pki / "server.key")])[0] for _ in range(processes)]


def scaling(space: TrustSpace, context: ssl.SSLContext, count: int, sessions: int,
            processes: int, postmaster: int | None = None) -> None:
    """Issue #19: accepted rate with 1 and N gateway processes against a do-nothing aiosmtpd
    with 1 and N processes, the same client (``sessions`` sessions), alternated twice."""
    rates: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    for _round in range(2):
        for n in (1, processes):
            port = free_port()
            nulls = null_group(space, port, n)
            rate, cpu = measure_many([p.pid for p in nulls], port, context, count, sessions)
            for p in nulls:
                p.kill()
                p.wait()
            rates.setdefault(f"null{n}", []).append(rate)
            cpus.setdefault(f"null{n}", []).append(cpu)
            port = free_port()
            relay = gateway(space, 0, port, processes=n)
            try:
                db_cpu = cpu_seconds(postmaster) if postmaster else 0.0
                rate, cpu = measure_many([relay.pid], port, context, count, sessions)
                db_cpu = (cpu_seconds(postmaster) - db_cpu) / count if postmaster else 0.0
            finally:
                relay.terminate()
                relay.wait()
            rates.setdefault(f"mss{n}", []).append(rate)
            cpus.setdefault(f"mss{n}", []).append(cpu)
            cpus.setdefault(f"db{n}", []).append(db_cpu)
    r = {k: sum(v) / len(v) for k, v in rates.items()}
    c = {k: sum(v) / len(v) for k, v in cpus.items()}
    n = processes
    engine = "PostgreSQL" if space.settings.database_url else "SQLite"
    lines = [
        ("database", engine),
        ("do-nothing aiosmtpd, 1 process", f"{r['null1']:.0f} msg/s, "
                                           f"{c['null1'] * 1000:.2f} ms CPU/msg"),
        (f"do-nothing aiosmtpd, {n} processes", f"{r[f'null{n}']:.0f} msg/s, "
                                                f"{c[f'null{n}'] * 1000:.2f} ms CPU/msg"),
        ("mss accepted, 1 process", f"{r['mss1']:.0f} msg/s, {c['mss1'] * 1000:.2f} ms CPU/msg"),
        (f"mss accepted, {n} processes", f"{r[f'mss{n}']:.0f} msg/s, "
                                         f"{c[f'mss{n}'] * 1000:.2f} ms CPU/msg"),
        (f"mss {n} / do-nothing {n} (target ≥ 0.35)", f"{r[f'mss{n}'] / r[f'null{n}']:.2f}"),
        (f"mss {n} / mss 1 (target ≥ 1.6)", f"{r[f'mss{n}'] / r['mss1']:.2f}"),
        ("mss 1 / do-nothing 1", f"{r['mss1'] / r['null1']:.2f}"),
        (f"PostgreSQL's CPU per message (1 / {n})", f"{c['db1'] * 1000:.2f} / "
                                                   f"{c[f'db{n}'] * 1000:.2f} ms"),
        (f"do-nothing {n} / do-nothing 1", f"{r[f'null{n}'] / r['null1']:.2f}"),
    ]
    for name, value in lines:
        print(f"{name:44} {value}")
    print(json.dumps({"messages": count, "sessions": sessions, "processes": n,
                      "rates": rates}))


def measure_many(pids: list[int], port: int, context: ssl.SSLContext, count: int,
                 sessions: int) -> tuple[float, float]:
    """``measure_smtp`` over several server processes (their CPU summed)."""
    before: list[float] = []
    rate = asyncio.run(blast(port, context, count, sessions, 10_240,
                             lambda: before.append(sum(map(cpu_seconds, pids)))))
    return rate, (sum(map(cpu_seconds, pids)) - before[0]) / count


def report(space, root: Path, context: ssl.SSLContext, count: int, sessions: int,  # type: ignore[no-untyped-def]
           big: int, old: Path | None = None) -> None:
    crypto = crypto_cost(space)
    write_wall, write_cpu = durable_write_cost(root)
    pki = space.settings.pki_dir
    null_port = free_port()
    null, _ = spawn([str(Path(__file__)), "--serve-null", str(null_port),
                     str(pki / "server.crt"), str(pki / "server.key")])
    null_rate, null_cpu = measure_smtp(null, null_port, context, count, sessions, 10_240)
    null_big, _ = measure_smtp(null, null_port, context, big, 1, 1_000_000)
    null.kill()
    port = free_port()
    accepted, relay_cpu = accepted_by(space, ROOT, port, context, count, sessions)
    queued = count
    # The bare client delivers the relay's own local form (signed, with its trace fields),
    # so that the mail store does the same work for both (parsing, full-text indexing).
    local_form = queued_form(space)
    lmtp1 = bare_lmtp_rate(space, count // 2, 1, local_form)
    lmtp4 = bare_lmtp_rate(space, count, WORKERS, local_form)
    before: list[tuple[float, float]] = []
    if old is not None:  # alternate: old, new, old (the first new run is above)
        before.append(accepted_by(space, old, port, context, count, sessions))
        again = accepted_by(space, ROOT, port, context, count, sessions)
        before.append(accepted_by(space, old, port, context, count, sessions))
        accepted, relay_cpu = (accepted + again[0]) / 2, (relay_cpu + again[1]) / 2
        queued = 4 * count
    drain = gateway(space, WORKERS, free_port())  # workers only: the delivery rate
    delivered = drain_rate(space, drain, queued)
    drain.terminate()
    drain.wait()
    relay = gateway(space, 0, port)
    relay_big, _ = measure_smtp(relay, port, context, big, 1, 1_000_000)
    relay.terminate()
    relay.wait()
    unavoidable = null_cpu + crypto + write_cpu
    lines = [
        ("sign+encrypt, 10 KB (CPU)", f"{crypto * 1000:.2f} ms"),
        ("durable write, 10 KB (wall / CPU)", f"{write_wall * 1000:.2f} / "
                                              f"{write_cpu * 1000:.2f} ms"),
        (f"bare LMTP, INBOX+Sent (1 / {WORKERS} threads)", f"{lmtp1:.0f} / {lmtp4:.0f} msg/s"),
        (f"do-nothing aiosmtpd, {sessions} sessions", f"{null_rate:.0f} msg/s, "
                                                      f"{null_cpu * 1000:.2f} ms CPU/msg"),
        ("relay accepted (sign+encrypt asked)", f"{accepted:.0f} msg/s, "
                                                f"{relay_cpu * 1000:.2f} ms CPU/msg"),
        (f"relay delivered ({WORKERS} workers)", f"{delivered:.0f} msg/s"),
        ("1 MB: do-nothing / relay", f"{null_big:.1f} / {relay_big:.1f} msg/s"),
        ("accepted / do-nothing (target ≥ 0.35)", f"{accepted / null_rate:.2f}"),
        (f"delivered / bare LMTP {WORKERS} threads (≥ 0.8)", f"{delivered / lmtp4:.2f}"),
        ("CPU / unavoidable parts (target ≤ 1.5)", f"{relay_cpu / unavoidable:.2f}"),
    ]
    if before:
        old_rate = sum(r for r, _ in before) / len(before)
        old_cpu = sum(c for _, c in before) / len(before)
        lines += [
            ("before (--against): accepted", f"{old_rate:.0f} msg/s, "
                                             f"{old_cpu * 1000:.2f} ms CPU/msg"),
            ("after / before: accepted rate (≥ 1)", f"{accepted / old_rate:.2f}"),
            ("after / before: CPU per message (≤ 1)", f"{relay_cpu / old_cpu:.2f}"),
        ]
    for name, value in lines:
        print(f"{name:44} {value}")
    print(json.dumps({"messages": count, "sessions": sessions}))


if __name__ == "__main__":
    main()
