"""Several hosts, for real (issue #19): Linux network namespaces created by this test, one per
host, joined by veth pairs to a bridge in a namespace of its own; addresses only inside those
namespaces, in 198.18.0.0/24 (RFC 2544's benchmarking range); everything removed at the end,
failure or not. Nothing listens on the machine's own interfaces.

    198.18.0.1   PostgreSQL           198.18.0.4   gateway 2
    198.18.0.2   mail store 1 (Dovecot, LMTP over TLS on 2424; the default store)
    198.18.0.3   gateway 1            198.18.0.5   webmail
    198.18.0.6   mail store 2 (Julie's mailbox; a data directory of its own)
    198.18.0.10  the client (smtplib, imaplib, an HTTPS browser: tests/netns_client.py)

Each role is ``ip netns exec HOST mss run --role …``; the data directory is shared through the
file system (certificates, Dovecot's configuration), every network hop goes between the
namespaces' addresses: the gateways deliver with ``MSS_LMTP_URL=lmtps://198.18.0.2:2424``
(the store's log shows their connections from .3 and .4), the webmail reads IMAP at
``MSS_IMAP_HOST`` and submits at ``MSS_SUBMISSION_HOST``, both checked against the server
certificate's names. A message submitted to each gateway and one through the webmail arrive
once each; a burst to both gateways while one is killed with SIGKILL loses and duplicates
nothing that was acknowledged. Two mail stores (``MSS_MAIL_STORES``, issue #19): a message
to Julie, placed on store 2, goes from gateway 1 to store 2 over LMTPS, and Julie reads it
with IMAP at store 1, which proxies her login to store 2."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mailstore_fixtures import open_tempdir
from tests.pg import TempPostgres

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(420)]

PYTHON = [sys.executable, "-m"]
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Demo-Passw0rd"
SENDER, RECIPIENT = "marie.martin@mss.test", "paul.durand@mss.test"
NET = "198.18.0"
HOSTS = {"pg": 1, "store": 2, "gw1": 3, "gw2": 4, "web": 5, "store2": 6, "client": 10}
JULIE = "julie.bernard@mss.test"  # placed on store2
LMTPS_PORT = 2424
SUBMISSION, IMAPS, WEB = 5870, 9930, 8443  # the defaults: each host has its own ports
BURST = 60  # messages to each gateway while gateway 1 is killed
DEADLINE = 120.0  # seconds for every acknowledged message to arrive


def ip(host: str) -> str:
    return f"{NET}.{HOSTS[host]}"


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Network:
    """The namespaces: ``<prefix>-hub`` holds the bridge, one per host in ``HOSTS``."""

    def __init__(self) -> None:
        self.prefix = f"mss{os.getpid() % 100000}"
        self.created: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def exec(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def create(self) -> None:
        hub = self.ns("hub")
        self._add(hub)
        _sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", hub, "link", "set", "br0", "up")
        for host, last in HOSTS.items():
            name = self.ns(host)
            self._add(name)
            # both ends created straight inside their namespaces: nothing in the root one
            _sh("ip", "link", "add", f"v{last}", "netns", hub, "type", "veth",
                "peer", "name", "eth0", "netns", name)
            _sh("ip", "-n", hub, "link", "set", f"v{last}", "master", "br0", "up")
            _sh("ip", "-n", name, "addr", "add", f"{NET}.{last}/24", "dev", "eth0")
            _sh("ip", "-n", name, "link", "set", "eth0", "up")
            _sh("ip", "-n", name, "link", "set", "lo", "up")

    def _add(self, name: str) -> None:
        _sh("ip", "netns", "add", name)
        self.created.append(name)

    def remove(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self.created.clear()


def _sweep_orphans() -> None:
    """Remove the namespaces of an earlier run that was killed before its clean-up
    (``mss<pid>-…`` whose pid no longer runs), their processes first."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10).stdout
    for name in (line.split()[0] for line in listed.splitlines() if line.strip()):
        match = re.fullmatch(r"mss(\d+)-[a-z0-9]+", name)
        if match is None or int(match.group(1)) == os.getpid() % 100000:
            continue
        if any(int(pid) % 100000 == int(match.group(1)) for pid in os.listdir("/proc")
               if pid.isdigit()):
            continue  # its run may still be going
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                              timeout=10).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _namespaces_or_skip() -> None:
    probe = f"mssprobe{os.getpid() % 100000}"
    try:
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"espaces de noms réseau indisponibles (ip netns : {exc})")
    if made.returncode != 0:
        pytest.skip("espaces de noms réseau indisponibles (ip netns add : "
                    f"{made.stderr.strip() or made.returncode}) : il faut root ou CAP_SYS_ADMIN")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    _sweep_orphans()


class Hosts:
    """The roles, each an ``mss run --role`` in its namespace and process group."""

    def __init__(self, net: Network, data: Path, database_url: str) -> None:
        self.net, self.data = net, data
        self.logs = data.parent / "logs"
        self.logs.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}
        self.env.update(
            PYTHONPATH=str(ROOT), MSS_DATA_DIR=str(data), MSS_DATABASE_URL=database_url,
            MSS_DEMO_PASSWORD=PASSWORD, MSS_LMTP_URL=f"lmtps://{ip('store')}:{LMTPS_PORT}",
            MSS_IMAP_HOST=ip("store"), MSS_SUBMISSION_HOST=ip("gw1"),
            MSS_MAIL_STORES=f"store1={ip('store')},store2={ip('store2')}",
            MSS_RATE_LIMIT_PER_MINUTE="0", MSS_RETRY_BASE_SECONDS="1",
            MSS_QUEUE_LEASE_SECONDS="10",  # a dead gateway's claims are taken over soon
            MSS_UNDO_SEND_SECONDS="0",  # the webmail submits at once: 302 = acknowledged
            # about the topology, not the credentials: the demo password on SMTP and IMAP
            MSS_IMAP_SMTP_WEB_PASSWORD="1")
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.readers: list[threading.Thread] = []

    def run(self, host: str, *args: str, timeout: float = 180) -> str:
        done = subprocess.run([*self.net.exec(host), *PYTHON, *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args[:2]} sur {host} : {done.stderr[-2000:]}"
        return done.stdout

    def start(self, host: str, role: str, **env: str) -> None:
        log = open(self.logs / f"{host}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [*self.net.exec(host), *PYTHON, "mss.cli", "run", "--role", role],
            env={**self.env, "MSS_LISTEN_ADDRESS": ip(host), **env}, cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        log.close()
        self.procs[host] = proc
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"{role} sur {host} arrêté au démarrage : "
                                     f"{self.log(host)[-3000:]}")
            if "Ctrl-C" in line:
                # keep reading: a full pipe would block the service
                reader = threading.Thread(target=proc.stdout.read, daemon=True)
                reader.start()
                self.readers.append(reader)
                return
        raise AssertionError(f"{role} sur {host} pas prêt en 90 s")

    def log(self, host: str) -> str:
        return (self.logs / f"{host}.log").read_text(errors="replace")

    def kill9(self, host: str) -> None:
        os.killpg(self.procs[host].pid, signal.SIGKILL)
        self.procs[host].wait(10)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for reader in self.readers:
            reader.join(10)  # the end of the pipe reached: the processes are gone
        for proc in self.procs.values():
            if proc.stdout is not None:
                proc.stdout.close()

    # ------------------------------------------------------------------ the client host
    def submit(self, host: str, tokens: list[str], acked: list[str] | None = None,
               recipient: str = RECIPIENT) -> list[str]:
        """Submit ``tokens`` to ``host``'s gateway from the client host, one session; the
        acknowledged ones, appended to ``acked`` as each 250 comes (another thread watches)."""
        acked = [] if acked is None else acked
        with subprocess.Popen(
                [*self.net.exec("client"), *PYTHON, "tests.netns_client", "submit", ip(host),
                 str(SUBMISSION), SENDER, PASSWORD, recipient,
                 str(self.data / "pki" / "ca.pem"), *tokens],
                env=self.env, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("ok "):
                    acked.append(line[3:].strip())
        return acked

    def inbox(self, recipient: str = RECIPIENT) -> Counter[str]:
        out = self.run("client", "tests.netns_client", "count", ip("store"), str(IMAPS),
                       recipient, PASSWORD, str(self.data / "pki" / "ca.pem"), timeout=60)
        return Counter(json.loads(out.strip().splitlines()[-1]))

    def wait_delivered(self, wanted: set[str], recipient: str = RECIPIENT) -> Counter[str]:
        deadline = time.monotonic() + DEADLINE
        while True:
            found = self.inbox(recipient)
            if wanted <= set(found) or time.monotonic() > deadline:
                return found
            time.sleep(1)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    _namespaces_or_skip()
    net = Network()
    root = open_tempdir("mss-netns-")
    pg: TempPostgres | None = None
    topo: Hosts | None = None
    try:
        net.create()
        pg = TempPostgres(listen=ip("pg"), prefix=tuple(net.exec("pg")))
        url = pg.start()
        topo = Hosts(net, root / "data", url)
        topo.run("client", "mss.cli", "demo")  # init: CA, server certificate, LMTP client
        topo.run("client", "mss.cli", "store", "place", JULIE, "store2", "--moved")
        topo.start("store", "mailstore", MSS_LOG_LEVEL="DEBUG")
        # store 2: a data directory of its own, with what every host shares (the CA and the
        # server certificate naming both stores, mss's secret, the webmail's master secret,
        # the webmail's submission password: `mss run` would otherwise issue a new one)
        data2 = root / "data2"
        shutil.copytree(root / "data" / "pki", data2 / "pki")
        (data2 / "dovecot").mkdir()
        shutil.copy(root / "data" / "dovecot" / "master-secret", data2 / "dovecot")
        for name in ("secret.key", "webmail.secret", "mss.toml"):
            shutil.copy(root / "data" / name, data2 / name)
        topo.start("store2", "mailstore", MSS_DATA_DIR=str(data2), MSS_MAIL_STORE="store2",
                   MSS_LOG_LEVEL="DEBUG",
                   MSS_LMTP_URL=f"lmtps://{ip('store2')}:{LMTPS_PORT}")
        topo.start("gw1", "gateway")
        topo.start("gw2", "gateway")
        topo.start("web", "webmail", MSS_WEBMAIL_URL=f"https://{ip('web')}:{WEB}/")
        yield topo
    finally:
        if topo is not None:
            topo.stop()
        if pg is not None:
            pg.stop()
        net.remove()
        shutil.rmtree(root, ignore_errors=True)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert net.prefix + "-" not in left, "espaces de noms réseau restants"


def test_several_hosts_deliver_once_and_survive_a_killed_gateway(hosts: Hosts) -> None:
    # 1. one message to each gateway, one through the webmail: each arrives once
    one, two = f"a{uuid.uuid4().hex[:12]}", f"b{uuid.uuid4().hex[:12]}"
    assert hosts.submit("gw1", [one]) == [one]
    assert hosts.submit("gw2", [two]) == [two]
    web = f"w{uuid.uuid4().hex[:12]}"
    out = hosts.run("client", "tests.netns_client", "webmail", f"https://{ip('web')}:{WEB}",
                    SENDER, PASSWORD, str(hosts.data / "spool" / "mail"), RECIPIENT, web)
    assert f"ok {web}" in out
    found = hosts.wait_delivered({one, two, web})
    assert [found[t] for t in (one, two, web)] == [1, 1, 1], found

    # two stores: gateway 1 delivers Julie's copy to store 2, her login at store 1 is proxied
    third = f"j{uuid.uuid4().hex[:12]}"
    assert hosts.submit("gw1", [third], recipient=JULIE) == [third]
    assert hosts.wait_delivered({third}, JULIE)[third] == 1
    # over LMTP on TLS, from a gateway's own address (either gateway may claim any message:
    # they share the queue)
    assert any(f"LMTP sur TLS : passerelle {ip(gw)} " in hosts.log("store2")
               for gw in ("gw1", "gw2"))
    proxied = (hosts.data / "log" / "dovecot.log").read_text(errors="replace")
    assert f"Started proxying to <{ip('store2')}> (master mss-proxy)" in proxied
    assert (hosts.data.parent / "data2" / "mail" / "mss.test" / "julie.bernard").is_dir()

    # 2. a burst to both gateways; gateway 1 is killed with SIGKILL part-way
    first = [f"k{uuid.uuid4().hex[:12]}" for _ in range(BURST)]
    second = [f"s{uuid.uuid4().hex[:12]}" for _ in range(BURST)]
    acked: dict[str, list[str]] = {"gw1": [], "gw2": []}
    senders = [threading.Thread(target=hosts.submit, args=(h, t, acked[h]))
               for h, t in (("gw1", first), ("gw2", second))]
    for thread in senders:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acked["gw1"]) < BURST // 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    hosts.kill9("gw1")  # while its worker threads deliver and its client still sends
    for thread in senders:
        thread.join(120)
    killed_at = time.monotonic()
    confirmed = set(acked["gw1"]) | set(acked["gw2"])
    assert len(acked["gw2"]) == BURST, "la passerelle 2 a refusé pendant la panne de la 1"
    assert 0 < len(acked["gw1"]) < BURST, (
        f"la passerelle 1 devait mourir en cours de rafale ({len(acked['gw1'])} acceptés)")
    found = hosts.wait_delivered(confirmed)
    lost = confirmed - set(found)
    assert not lost, f"{len(lost)} message(s) acceptés perdus"
    twice = [t for t in first + second + [one, two, web] if found[t] > 1]
    assert not twice, f"remis plusieurs fois : {twice}"
    # Each gateway reached a store over LMTP on TLS, from its own address: gateway 2 at least
    # after gateway 1 died; gateway 1 before (its share of the burst, claimed while it ran).
    stores = hosts.log("store") + hosts.log("store2")
    for gw in ("gw1", "gw2"):
        assert f"LMTP sur TLS : passerelle {ip(gw)} " in stores, gw
    print(f"\nrafale : passerelle 1 tuée après {len(acked['gw1'])}/{BURST} acceptés, "
          f"passerelle 2 {len(acked['gw2'])}/{BURST} ; non acquittés remis : "
          f"{len(set(found) & (set(first) - confirmed))} ; tout remis "
          f"{time.monotonic() - killed_at:.1f} s après la fin des envois")


def test_namespaces_left_by_a_killed_run_are_removed() -> None:
    """A run killed before its clean-up (SIGKILL of pytest) leaves ``mss<pid>-…``
    namespaces; the next run removes those whose pid is gone, and no other."""
    _namespaces_or_skip()
    running = {int(pid) % 100000 for pid in os.listdir("/proc") if pid.isdigit()}
    gone = next(n for n in range(99999, 1, -1) if n not in running)
    orphan, other = f"mss{gone}-hub", f"keep{gone}-hub"
    for name in (orphan, other):
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        _sweep_orphans()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert orphan not in left and other in left
    finally:
        for name in (orphan, other):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
