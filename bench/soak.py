"""Load soak on loopback (issue 7): ``python -m bench.soak --minutes 5`` (30 for the long one).

A demo data directory (SQLite, or ``--database-url``) runs as three ``mss run --role …``
processes: gateway, webmail, mailstore. First the maximum rate is measured (``--threads``
sessions sending as fast as they can for ``--calibrate`` seconds; the rate counts until the
last of those messages is delivered, so it is what acceptance and delivery sustain together),
then the steady phase submits at half of it while IMAP readers and webmail page loads run.
Between the two, ``--warm-up`` seconds (60) of the steady phase's traffic, unmeasured but with
its errors counted: a process's first minute of a kind of traffic (the webmail gets none during
the calibration) fills its caches, thread stacks and allocator arenas once, and is not a trend.
Printed: latency percentiles per activity, errors, delivered vs accepted, the resident
memory (RSS of each role's process and its descendants) sampled every 5 s with its trend, and
the steady phase's CPU per message for each role. The submitters arrive as a Poisson process
(``arrival_gaps``); every client logs in over SMTP/IMAP with an application password of its
own, as mss's default settings require (``--account-password``: the Argon2id account password
instead, as until 2026-12-07).

``visibility`` is the time from a submission's MAIL FROM to the moment an IMAP client polling
the recipient's INBOX (NOOP every 20 ms) sees the message (issue #19: p99 ≤ 250 ms at half the
maximum rate): a probe sends one message every 2 s to a mailbox of its own while the load runs.
A client in IDLE learns it 0.5 s later still: Dovecot 2.3 delays its notifications by 500 ms.

The exit code is 0 only with no error, every accepted message delivered, a visibility p99
within 250 ms and the anonymous RSS of every process that lived through the steady phase
grown by at most 5 MB, from the lowest of its first tenth of samples to the lowest of its
last (issue #19's soak).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import imaplib
import os
import random
import shutil
import signal
import smtplib
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.mailstore_fixtures import free_port, open_tempdir  # noqa: E402

MSS = [sys.executable, "-m", "mss.cli"]
PASSWORD = "Demo-Passw0rd"
SENDER, RECIPIENT = "marie.martin@mss.test", "paul.durand@mss.test"
PROBE = "julie.bernard@mss.test"  # the visibility probe's recipient: no other traffic
VISIBLE_P99 = 0.250  # seconds
RSS_BAND = 5.0  # MB
ROLES = ("gateway", "webmail", "mailstore")  # mail store last (see tests/test_topology.py)


def arrival_gaps(interval: float, rng: random.Random | None = None) -> Iterator[float]:
    """A submitter's schedule: first a random moment within one ``interval``, then gaps drawn
    from an exponential distribution of mean ``interval`` (Poisson arrivals); all zeros for
    0 (as fast as possible)."""
    rng = rng or random.Random()
    yield rng.uniform(0.0, interval) if interval else 0.0
    while True:
        yield rng.expovariate(1.0 / interval) if interval else 0.0


class Services:
    """The three role processes, each in its own process group."""

    def __init__(self, root: Path, database_url: str | None,
                 account_password: bool = False) -> None:
        """``account_password``: the clients log in over SMTP and IMAP with the accounts' own
        password (Argon2id, ~0.1 s of CPU per login; allowed by ``MSS_IMAP_SMTP_WEB_PASSWORD``,
        off by default), as the soak did until 2026-12-07; by default with an application
        password each, as mss requires of IMAP/SMTP clients."""
        self.data = root / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}
        self.ports = {n: free_port() for n in ("SUBMISSION", "SUBMISSIONS", "RELAY", "IMAP",
                                               "IMAPS", "WEB", "METRICS")}
        self.env.update({f"MSS_{n}_PORT": str(p) for n, p in self.ports.items()})
        self.env.update(MSS_DATA_DIR=str(self.data), MSS_DEMO_PASSWORD=PASSWORD,
                        MSS_RATE_LIMIT_PER_MINUTE="0", MSS_LOG_LEVEL="WARNING")
        if account_password:
            self.env["MSS_IMAP_SMTP_WEB_PASSWORD"] = "true"
        self.account_password = account_password
        self.passwords = {login: PASSWORD for login in (SENDER, RECIPIENT, PROBE)}
        self.database_url = database_url
        if database_url:
            self.env["MSS_DATABASE_URL"] = database_url
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self) -> None:
        subprocess.run([*MSS, "demo"], env=self.env, check=True, capture_output=True)
        if not self.account_password:
            for login in self.passwords:  # shown once, on the line after the title
                made = subprocess.run([*MSS, "account", "app-password", "create", login,
                                       "--name", "Soak"], env=self.env, check=True,
                                      capture_output=True, text=True)
                self.passwords[login] = made.stdout.splitlines()[1].strip()
        for role in ROLES:
            errors = self.data.parent / f"{role}.stderr"  # warnings and errors (LOG_LEVEL)
            with errors.open("w") as sink:
                proc = subprocess.Popen([*MSS, "run", "--role", role], env=self.env, text=True,
                                        stdout=subprocess.PIPE, stderr=sink,
                                        start_new_session=True)
            self.procs[role] = proc
            assert proc.stdout is not None
            said: list[str] = []
            while "Ctrl-C" not in (line := proc.stdout.readline()):
                if not line:
                    tail = "".join(said[-10:]) + "".join(errors.read_text().splitlines(True)[-20:])
                    raise SystemExit(f"mss run --role {role} s'est arrêté :\n{tail}")
                said.append(line)

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.stdout:
                proc.stdout.close()

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of each role: its process and all descendants (Dovecot included,
        although it runs in a session of its own)."""
        totals: dict[str, float] = defaultdict(float)
        for (role, _pid, _name), mb in self.rss_by_process().items():
            totals[role] += mb
        return dict(totals)

    def rss_by_process(self, anonymous: bool = False) -> dict[tuple[str, int, str], float]:
        """(role, pid, command name) → RSS in MB of every process of the roles; ``anonymous``:
        its anonymous part only (``RssAnon``: the heap, what a leak grows), without the pages
        of mapped files, which come and go with the kernel's page cache (Dovecot's auth
        process, seen here between 12 and 76 MB from one sample to the next)."""
        def mb(entry: Path, _stat: list[str]) -> float:
            if anonymous:
                status = (entry / "status").read_text()
                return int(status.split("RssAnon:", 1)[1].split()[0]) / 1024
            pages = int((entry / "statm").read_text().split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
        return self._by_process(mb)

    def cpu_by_process(self) -> dict[tuple[str, int, str], float]:
        """(role, pid, command name) → CPU seconds (user + system) of every process of the
        roles, with those of its children that ended and that it reaped (Dovecot's IMAP
        processes, one per login, end in their master's count)."""
        tick = os.sysconf("SC_CLK_TCK")

        def seconds(_entry: Path, stat: list[str]) -> float:
            return sum(int(v) for v in stat[11:15]) / tick  # utime stime cutime cstime
        return self._by_process(seconds)

    def _by_process(self, measure: Callable[[Path, list[str]], float]
                    ) -> dict[tuple[str, int, str], float]:
        procs: dict[int, tuple[int, str, float]] = {}  # pid -> (parent pid, name, measure)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                head, _, rest = (entry / "stat").read_text().rpartition(")")
                stat = rest.split()  # from the state on: [1] parent pid, [11:15] CPU ticks
                value = measure(entry, stat)
            except (OSError, IndexError, ValueError):
                continue
            procs[int(entry.name)] = (int(stat[1]), head.partition("(")[2], value)
        roles = {proc.pid: role for role, proc in self.procs.items()}
        found: dict[tuple[str, int, str], float] = {}
        for pid, (_, name, value) in procs.items():
            ancestor, hops = pid, 0
            while ancestor not in roles and ancestor in procs and hops < 50:
                ancestor, hops = procs[ancestor][0], hops + 1
            if ancestor in roles:
                found[(roles[ancestor], pid, name)] = value
        return found


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)

    def time(self, name: str, fn: object) -> bool:
        start = time.monotonic()
        try:
            fn()  # type: ignore[operator]
        except Exception as exc:  # a soak counts every failure, whatever it is
            with self.lock:
                self.errors[name].append(f"{type(exc).__name__}: {exc}"[:200])
            return False
        with self.lock:
            self.latency[name].append(time.monotonic() - start)
        return True


class Load:
    def __init__(self, services: Services, rec: Recorder) -> None:
        self.s, self.rec = services, rec
        self.ctx = ssl.create_default_context(cafile=str(services.data / "pki" / "ca.pem"))
        self.ctx.check_hostname = False
        self.stop = threading.Event()
        self.accepted = 0
        # The probes seen: (Message-ID, wall clock at MAIL FROM, at the 250, when visible).
        self.probes: list[tuple[str, float, float, float]] = []

    def _session(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP("127.0.0.1", self.s.ports["SUBMISSION"], timeout=30)
        smtp.starttls(context=self.ctx)
        smtp.login(SENDER, self.s.passwords[SENDER])
        return smtp

    def submitter(self, interval: float, name: str) -> None:
        """Send one message every ``interval`` seconds on average (0: as fast as possible).

        The gaps are drawn from an exponential distribution and each thread starts at a random
        moment of its first interval: the submitters together make Poisson arrivals at the
        steady rate, as independent senders do. (Until 2026-12-07 every thread sent at the
        same instants: ``--threads`` messages at once every ``interval``, bursts that queued
        behind each other and that no rate of independent senders produces.)"""
        smtp: smtplib.SMTP | None = None
        gaps = arrival_gaps(interval)
        due = time.monotonic() + next(gaps)
        self.stop.wait(max(0.0, due - time.monotonic()))
        while not self.stop.is_set():
            if smtp is None:
                try:
                    smtp = self._session()
                except Exception as exc:  # counted, then retried
                    self.rec.errors[name].append(f"session: {exc}"[:200])
                    time.sleep(1)
                    continue
            raw = (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: soak\r\nMessage-ID: "
                   f"<{uuid.uuid4().hex}@soak.test>\r\n\r\n" + "Ligne de compte rendu.\r\n" * 40
                   ).encode()
            if self.rec.time(name, functools.partial(smtp.sendmail, SENDER, [RECIPIENT], raw)):
                with self.rec.lock:
                    self.accepted += 1
            else:
                smtp = None
            if interval:
                due += next(gaps)
                self.stop.wait(max(0.0, due - time.monotonic()))

    def visibility(self) -> None:
        """Submit → visible over IMAP: one message every 2 s to PROBE."""
        from imapclient import IMAPClient

        imap: IMAPClient | None = None
        smtp: smtplib.SMTP | None = None
        while not self.stop.is_set():
            try:
                if imap is None:
                    imap = IMAPClient("127.0.0.1", port=self.s.ports["IMAPS"], ssl=True,
                                      ssl_context=self.ctx, timeout=30)
                    imap.login(PROBE, self.s.passwords[PROBE])
                    imap.select_folder("INBOX", readonly=True)
                if smtp is None:
                    smtp = self._session()
                self._probe_once(imap, smtp)
            except Exception as exc:  # counted; the sessions are opened again
                with self.rec.lock:
                    self.rec.errors["visibility"].append(f"{type(exc).__name__}: {exc}"[:200])
                # Already broken: closing them may fail too, which changes nothing.
                for close in (getattr(imap, "logout", None), getattr(smtp, "close", None)):
                    with contextlib.suppress(Exception):
                        if close:
                            close()
                imap = smtp = None
            self.stop.wait(2.0)
        if imap is not None:
            imap.logout()
        if smtp is not None:
            smtp.quit()

    def _probe_once(self, imap, smtp: smtplib.SMTP) -> None:  # type: ignore[no-untyped-def]
        tag = uuid.uuid4().hex
        raw = (f"From: {SENDER}\r\nTo: {PROBE}\r\nSubject: visibilite {tag}\r\n"
               f"Message-ID: <{tag}@soak.test>\r\n\r\nSonde.\r\n").encode()
        start, wall = time.monotonic(), time.time()
        smtp.sendmail(SENDER, [PROBE], raw)
        acknowledged = time.monotonic()
        # NOOP every 20 ms: the moment the store shows the message to a client that asks.
        # (A client in IDLE is told 0.5 s later: Dovecot 2.3 waits NOTIFY_DELAY_MSECS = 500
        # after a change before it notifies, src/lib-storage/mailbox-watch.c.)
        while not any(len(r) > 1 and r[1] == b"EXISTS" for r in imap.noop()[1]):
            if time.monotonic() - start > 30:
                raise TimeoutError(f"message {tag} invisible après 30 s")
            time.sleep(0.02)
        seen = time.monotonic()
        found = imap.search(["HEADER", "Message-ID", f"<{tag}@soak.test>"])
        if not found:
            raise AssertionError(f"EXISTS reçu, mais pas le message {tag}")
        with self.rec.lock:
            self.rec.latency["visibility"].append(seen - start)
            self.probes.append((f"<{tag}@soak.test>", wall, wall + acknowledged - start,
                                wall + seen - start))

    def imap_reader(self) -> None:
        def read() -> None:
            with imaplib.IMAP4_SSL("127.0.0.1", self.s.ports["IMAPS"], ssl_context=self.ctx,
                                   timeout=30) as imap:
                imap.login(RECIPIENT, self.s.passwords[RECIPIENT])
                _, data = imap.select("INBOX", readonly=True)
                count = int(data[0] or 0)
                if count:
                    imap.fetch(f"{max(1, count - 9)}:{count}", "(BODY.PEEK[HEADER])")
        while not self.stop.is_set():
            self.rec.time("imap", read)
            self.stop.wait(0.5)

    def web_user(self) -> None:
        url = f"https://127.0.0.1:{self.s.ports['WEB']}/connexion"

        def load() -> None:
            with urllib.request.urlopen(url, context=self.ctx, timeout=30) as response:
                assert response.status == 200 and b"<form" in response.read()
        while not self.stop.is_set():
            self.rec.time("webmail", load)
            self.stop.wait(0.5)


def run_threads(targets: list[tuple[object, tuple[object, ...]]], seconds: float,
                load: Load) -> None:
    load.stop.clear()
    threads = [threading.Thread(target=t, args=a, daemon=True) for t, a in targets]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    load.stop.wait(seconds)
    load.stop.set()
    for thread in threads:
        thread.join(60)


def inbox_count(load: Load) -> int:
    with imaplib.IMAP4_SSL("127.0.0.1", load.s.ports["IMAPS"], ssl_context=load.ctx) as imap:
        imap.login(RECIPIENT, load.s.passwords[RECIPIENT])
        _, data = imap.select("INBOX", readonly=True)
        return int(data[0] or 0)


def percentiles(values: list[float]) -> str:
    if not values:
        return "aucune mesure"
    q = (statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1
         else [values[0]] * 99)
    return (f"n={len(values)} p50={q[49] * 1000:.0f} ms p95={q[94] * 1000:.0f} ms "
            f"p99={q[98] * 1000:.0f} ms max={max(values) * 1000:.0f} ms")


def trend(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time, in MB per minute."""
    if len(samples) < 3:
        return 0.0
    return statistics.linear_regression([t for t, _ in samples],
                                        [m for _, m in samples]).slope * 60


def slowest_probes(services: Services, probes: list[tuple[str, float, float, float]],
                   count: int = 6) -> None:
    """Where the slowest probes spent their time, from the delivery timeline: the 250, the
    delivery recorded (after the worker's whole batch, so it may follow the moment the store
    shows the message) and the moment the polling client saw it, each from MAIL FROM."""
    from sqlalchemy import create_engine, select

    from spool.events import Event
    from spool.models import DeliveryEvent

    slow = sorted(probes, key=lambda p: p[1] - p[3])[:count]
    if not slow:
        return
    url = services.database_url or f"sqlite:///{services.data / 'mss.db'}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(DeliveryEvent.message_key, DeliveryEvent.at).where(
                DeliveryEvent.message_key.in_([p[0] for p in slow]),
                DeliveryEvent.recipient == PROBE,
                DeliveryEvent.event == Event.DELIVERED.value)).all()
    finally:
        engine.dispose()
    recorded = {key: at.timestamp() for key, at in rows}
    for key, wall, acked, seen in slow:
        done = (f"{(recorded[key] - wall) * 1000:.0f} ms" if key in recorded
                else "introuvable")
        print(f"sonde lente {key[1:9]} : 250 à {(acked - wall) * 1000:.0f} ms, remise "
              f"enregistrée à {done}, visible à {(seen - wall) * 1000:.0f} ms")


def stage_buckets(services: Services) -> dict[tuple[str, str], dict[float, float]]:
    """The gateway's delivery-stage histograms (``mss_delivery_stage_seconds`` for local
    recipients, ``mss_delivery_record_seconds``, ``mss_delivery_claim_seconds`` by ``found``,
    the count of ``mss_delivery_handed_total`` and of ``mss_queue_rings_total`` by direction):
    (metric, stage) → {upper bound: count}."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{services.ports['METRICS']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 — loopback
        text = reply.read().decode()
    found: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        if family.name == "mss_deferred":  # a deferral waits for its retry (60 s, doubling)
            found[("mss_deferred", "local")] = {float("inf"): sum(
                s.value for s in family.samples if s.name == "mss_deferred_total"
                and s.labels.get("kind") in ("local", "sent"))}
        if family.name == "mss_delivery_handed":  # claimed at acceptance, no claim of its own
            found[("mss_delivery_handed", "total")] = {float("inf"): sum(
                s.value for s in family.samples if s.name == "mss_delivery_handed_total")}
        if family.name == "mss_queue_rings":  # spool.doorbell, over every process
            for direction in ("sent", "heard"):
                found[("mss_queue_rings", direction)] = {float("inf"): sum(
                    s.value for s in family.samples if s.name == "mss_queue_rings_total"
                    and s.labels.get("direction") == direction)}
        if family.name not in ("mss_delivery_stage_seconds", "mss_delivery_record_seconds",
                               "mss_delivery_claim_seconds"):
            continue
        for sample in family.samples:
            labels = sample.labels
            if not sample.name.endswith("_bucket") or labels.get("kind", "local") != "local":
                continue
            key = (family.name, labels.get("stage", labels.get("found", "batch")))
            bound = float(labels["le"])
            found[key][bound] = found[key].get(bound, 0.0) + sample.value
    return found


def bucket_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's ``histogram_quantile`` on cumulative buckets (linear within one)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def stage_report(before: dict[tuple[str, str], dict[float, float]],
                 after: dict[tuple[str, str], dict[float, float]]) -> None:
    """Where the steady phase's local deliveries spent their time (issue #19): waiting in
    the queue, the LMTP attempt, recording the batch; p50/p99 from the gateway's buckets."""
    names = {("mss_delivery_stage_seconds", "queue"): "file d'attente (acceptation → essai)",
             ("mss_delivery_stage_seconds", "attempt"): "essai LMTP",
             ("mss_delivery_record_seconds", "batch"): "enregistrement d'un lot",
             ("mss_delivery_claim_seconds", "yes"): "prise d'un lot (non vide)",
             ("mss_delivery_claim_seconds", "no"): "prise d'un lot (vide)"}
    deferred = (after.get(("mss_deferred", "local"), {}).get(float("inf"), 0.0)
                - before.get(("mss_deferred", "local"), {}).get(float("inf"), 0.0))
    print(f"remises locales différées (réessayées plus tard) : {deferred:.0f}")
    handed = (after.get(("mss_delivery_handed", "total"), {}).get(float("inf"), 0.0)
              - before.get(("mss_delivery_handed", "total"), {}).get(float("inf"), 0.0))
    print(f"messages remis à un livreur libre dès l'acceptation (sans prise) : {handed:.0f}")
    rings = [after.get(("mss_queue_rings", d), {}).get(float("inf"), 0.0)
             - before.get(("mss_queue_rings", d), {}).get(float("inf"), 0.0)
             for d in ("sent", "heard")]
    print(f"sonnette de la file : {rings[0]:.0f} coups donnés, {rings[1]:.0f} entendus par un "
          "autre processus")
    for key, label in names.items():
        now, then = after.get(key, {}), before.get(key, {})
        steady = {b: c - then.get(b, 0.0) for b, c in now.items()}
        count = steady.get(float("inf"), 0.0)
        print(f"étape {label} : n={count:.0f} p50≈{bucket_quantile(0.5, steady) * 1000:.0f} ms "
              f"p99≈{bucket_quantile(0.99, steady) * 1000:.0f} ms")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU ticks of the whole machine since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    return float(sum(values) - idle), float(sum(values))


def cpu_report(before: dict[tuple[str, int, str], float],
               after: dict[tuple[str, int, str], float], client: float,
               machine: tuple[float, float], messages: int) -> None:
    """Where the steady phase's CPU went, per message accepted: each role (its processes and
    the children they reaped), the mail store by process name, and the load client itself
    (this process: submitters, readers, probe), which shares the machine's cores."""
    if messages <= 0:
        return
    roles: dict[str, float] = defaultdict(float)
    names: dict[str, float] = defaultdict(float)
    for key, seconds in after.items():
        spent = max(seconds - before.get(key, 0.0), 0.0)
        roles[key[0]] += spent
        if key[0] == "mailstore":
            names[key[2]] += spent
    busy, total = machine

    def ms(seconds: float) -> str:
        return f"{seconds * 1000 / messages:.1f} ms"
    top = ", ".join(f"{name} {ms(v)}" for name, v in
                    sorted(names.items(), key=lambda kv: -kv[1])[:6])
    print(f"CPU du régime : machine occupée à {100 * busy / max(total, 1):.0f} % ; par message "
          f"accepté : " + ", ".join(f"{role} {ms(roles[role])}" for role in ROLES)
          + f" ({top}) ; client de charge {ms(client)}")


def rss_shape(each: list[dict[tuple[str, int, str], float]],
              keys: list[tuple[str, int, str]]) -> None:
    """The anonymous RSS of ``keys`` minute by minute (the lowest sample of each minute;
    samples every 5 s): growth that levels off (warm-up) and a steady leak look alike in a
    start-to-end difference, not here."""
    for key in keys:
        minutes = [min((s[key] for s in each[i:i + 12] if key in s), default=float("nan"))
                   for i in range(0, len(each), 12)]
        print(f"RSS anonyme {key[0]:9} {key[2]} (pid {key[1]}) par minute : "
              + " ".join(f"{mb:.1f}" for mb in minutes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="steady phase duration")
    parser.add_argument("--calibrate", type=float, default=20.0, help="max-rate phase (s)")
    parser.add_argument("--warm-up", type=float, default=60.0,
                        help="steady traffic before the measures start (s)")
    parser.add_argument("--threads", type=int, default=8, help="submission sessions")
    parser.add_argument("--readers", type=int, default=2, help="IMAP readers and web users")
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite)")
    parser.add_argument("--account-password", action="store_true",
                        help="SMTP/IMAP logins with the account's Argon2id password (as before "
                             "2026-12-07) instead of an application password each")
    parser.add_argument("--rate", type=float,
                        help="steady rate in msg/s instead of half the measured maximum (to "
                             "compare two settings or two versions at the same load)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="an mss setting for the three processes, e.g. QUEUE_WORKERS=8 "
                             "(MSS_QUEUE_WORKERS); repeatable")
    args = parser.parse_args(argv)
    settings = {}
    for item in args.setting:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            parser.error(f"--setting {item!r} : NOM=VALEUR attendu")
        settings["MSS_" + name.strip().upper().removeprefix("MSS_")] = value
    root = open_tempdir("mss-soak-")
    services = Services(root, args.database_url, args.account_password)
    services.env.update(settings)
    rec = Recorder()
    try:
        services.start()
        load = Load(services, rec)
        began = time.monotonic()
        run_threads([(load.submitter, (0.0, "calibration"))] * args.threads, args.calibrate,
                    load)
        calibration = load.accepted
        max_rate = calibration / args.calibrate
        # The maximum the system sustains is acceptance *and* delivery: the burst counts
        # until its last message is in the INBOX (the queue absorbs what LMTP cannot take).
        deadline = time.monotonic() + 300
        while inbox_count(load) < calibration and time.monotonic() < deadline:
            time.sleep(0.5)
        sustained = calibration / (time.monotonic() - began)
        rate = args.rate or max(min(max_rate, sustained) / 2, 0.1)
        print(f"débit maximal mesuré : accepté {max_rate:.1f} msg/s, accepté et remis "
              f"{sustained:.1f} msg/s ({args.threads} sessions, {args.calibrate:.0f} s) ; "
              f"régime : {rate:.1f} msg/s{' (--rate)' if args.rate else ''} pendant "
              f"{args.minutes:g} min" + "".join(f" ; {k}={v}" for k, v in settings.items()),
              flush=True)
        load.accepted = 0
        traffic: list[tuple[object, tuple[object, ...]]] = [
            (load.submitter, (args.threads / rate, "submission"))] * args.threads
        traffic += [(load.imap_reader, ()), (load.web_user, ())] * args.readers
        warmed = 0
        if args.warm_up > 0:
            # The same traffic, its latencies set aside; its failures count as the run's.
            load.rec = Recorder()
            run_threads(traffic, args.warm_up, load)
            for name, failures in load.rec.errors.items():
                rec.errors[f"{name} (mise en route)"].extend(failures)
            load.rec, warmed, load.accepted = rec, load.accepted, 0
        stages_before = stage_buckets(services)
        cpu_before, client_before = services.cpu_by_process(), sum(os.times()[:2])
        machine_before = machine_busy()
        samples: dict[str, list[tuple[float, float]]] = defaultdict(list)
        each: list[dict[tuple[str, int, str], float]] = []  # anonymous RSS, every 5 s
        start = time.monotonic()

        def sample() -> None:
            while not load.stop.is_set():
                now = services.rss_by_process()
                each.append(services.rss_by_process(anonymous=True))
                totals: dict[str, float] = defaultdict(float)
                for (role, _pid, _name), mb in now.items():
                    totals[role] += mb
                for role, mb in totals.items():
                    samples[role].append((time.monotonic() - start, mb))
                load.stop.wait(5)
        run_threads(traffic + [(sample, ()), (load.visibility, ())], args.minutes * 60, load)
        cpu_after, client_after = services.cpu_by_process(), sum(os.times()[:2])
        busy_after, total_after = machine_busy()
        machine = (busy_after - machine_before[0], total_after - machine_before[1])
        deadline = time.monotonic() + 120
        accepted = calibration + warmed + load.accepted
        while (delivered := inbox_count(load)) < accepted and time.monotonic() < deadline:
            time.sleep(1)
        print(f"acceptés {accepted} (dont {warmed} en mise en route de {args.warm_up:g} s, "
              f"{load.accepted} en régime), remis {delivered} (INBOX de {RECIPIENT}, vide au "
              "départ)")
        for name in ("submission", "visibility", "imap", "webmail"):
            print(f"{name:11} {percentiles(rec.latency[name])} erreurs={len(rec.errors[name])}")
        for role, points in samples.items():
            mbs = [m for _, m in points]
            print(f"RSS {role:9} (processus et descendants) début {mbs[0]:.0f} Mo, fin "
                  f"{mbs[-1]:.0f} Mo, max {max(mbs):.0f} Mo, tendance {trend(points):+.2f} Mo/min")
        # Per process alive through the steady phase (Dovecot's IMAP processes come and go
        # with the readers' logins; a role's sum moves with them), its anonymous RSS: the
        # lowest of the first and of the last tenth of the samples (at most 2 minutes each). A
        # leak raises that floor; working memory does not (a Dovecot auth worker holds 64 MB
        # while it checks an Argon2id password, m=65536 KiB, and gives it back: sampled at
        # 2 MB and 67 MB 30 s apart). Growth past the band fails; memory given back after the
        # calibration burst is shown, not counted against it.
        window = max(1, min(len(each) // 10, 24))
        lasting = sorted(set(each[0]) & set(each[-1])) if each else []
        drifts: dict[tuple[str, int, str], tuple[float, float]] = {}
        for key in lasting:
            first = [s[key] for s in each[:window] if key in s]
            last = [s[key] for s in each[-window:] if key in s]
            drifts[key] = (min(first), min(last))
        flat = bool(drifts) and all(b - a <= RSS_BAND for a, b in drifts.values())
        for (role, pid, name), (a, b) in sorted(drifts.items(),
                                                key=lambda kv: -abs(kv[1][1] - kv[1][0]))[:8]:
            print(f"RSS anonyme {role:9} {name} (pid {pid}) {a:.1f} → {b:.1f} Mo, "
                  f"écart {b - a:+.1f} Mo (croissance admise ≤ {RSS_BAND:g})")
        growing = sorted(drifts, key=lambda k: drifts[k][0] - drifts[k][1])[:3]
        rss_shape(each, growing)
        cpu_report(cpu_before, cpu_after, client_after - client_before,
                   machine, load.accepted)
        try:
            stage_report(stages_before, stage_buckets(services))
        except Exception as exc:  # noqa: BLE001 — a diagnosis only: the verdicts stand
            print(f"étapes de la remise indisponibles : {type(exc).__name__}: {exc}")
        try:
            slowest_probes(services, load.probes)
        except Exception as exc:  # noqa: BLE001 — a diagnosis only: the verdicts stand
            print(f"détail des sondes lentes indisponible : {type(exc).__name__}: {exc}")
        for name, failures in rec.errors.items():
            for error in failures[:3]:
                print(f"erreur {name}: {error}")
        errors = sum(len(e) for n, e in rec.errors.items() if n != "calibration")
        seen = rec.latency["visibility"]
        p99 = (statistics.quantiles(seen, n=100, method="inclusive")[98] if len(seen) > 1
               else float("inf"))
        verdicts = {"erreurs": errors == 0, "acceptés = remis": delivered == accepted,
                    f"visibilité p99 ≤ {VISIBLE_P99 * 1000:.0f} ms": p99 <= VISIBLE_P99,
                    f"RSS anonyme +{RSS_BAND:g} Mo au plus": flat}
        print("verdict : " + ", ".join(f"{k} {'oui' if v else 'NON'}"
                                        for k, v in verdicts.items()))
        return 0 if all(verdicts.values()) else 1
    finally:
        services.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
