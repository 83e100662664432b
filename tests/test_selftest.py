"""``mss selftest`` against the real demo: ``mss demo`` then ``mss run`` (Dovecot, gateway,
webmail) on free loopback ports, driven through the real command. It passes on the demo and
fails with a clear reason on a whitelist DN mismatch and on an expired server certificate."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core.db import utcnow
from mss.app import App
from mss.setup import write_pair
from tests.mailstore_fixtures import free_port, open_tempdir

MSS = [sys.executable, "-m", "mss.cli"]
PORTS = ("SUBMISSION", "SUBMISSIONS", "RELAY", "IMAP", "IMAPS", "MANAGESIEVE", "WEB", "METRICS",
         "OIDC_STANDIN")  # the demo's Pro Santé Connect stand-in too


class Demo:
    """A demo data directory and its ``mss run`` process (own process group)."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.ports = {name: free_port() for name in PORTS}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}
        self.env.update({f"MSS_{n}_PORT": str(p) for n, p in self.ports.items()})
        self.env.update(MSS_DATA_DIR=str(self.data), MSS_DEMO_PASSWORD="Demo-Passw0rd")
        self.proc: subprocess.Popen[str] | None = None

    def mss(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*MSS, *args], env=self.env, capture_output=True, text=True,
                              timeout=120, check=check)

    def start(self) -> None:
        self.proc = subprocess.Popen([*MSS, "run"], env=self.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("mss run s'est arrêté au démarrage")
            if "Ctrl-C" in line:
                break
        _readable_master_users(self.data)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def selftest(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.mss("selftest", "--json", *args)
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, json.loads(done.stdout)


def _readable_master_users(data: Path) -> None:
    """Regression check: under ``mss run`` (umask 077) as root, ``master-users`` must stay
    group-readable, or Dovecot's auth process cannot read it and every master-user login (the
    webmail's) fails."""
    path = data / "dovecot" / "master-users"
    if os.geteuid() == 0 and path.exists():
        assert path.stat().st_mode & 0o040, "master-users is not readable by Dovecot's group"


def by_name(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    root = open_tempdir("mss-selftest-")
    demo = Demo(root)
    demo.mss("demo", check=True)
    demo.start()
    yield demo
    demo.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_selftest_passes_on_the_demo(demo: Demo) -> None:
    code, report = demo.selftest()
    checks = by_name(report)
    assert code == 0 and report["ok"], report
    for name in ("tls.submission", "tls.submissions", "tls.relay", "certificate.submission",
                 "certificate.relay", "smtp.rcpt_refusal", "smtp.x_mss_headers", "mdn",
                 "audit"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "550 5.7.1" in checks["smtp.rcpt_refusal"]["detail"]
    assert "4 suites ECO.1.1.3" in checks["tls.relay"]["detail"]
    assert checks["whitelist"]["status"] == "skip"


def test_text_output_and_exit_code(demo: Demo) -> None:
    done = demo.mss("selftest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[OK  ] tls.relay" in done.stdout
    assert "Auto-test : conforme" in done.stdout


def _whitelist(demo: Demo, tmp_path: Path, domain: str, dn: str) -> None:
    xml = (f'<ListeBlanche xmlns="https://listeblanche.mssante.fr/schema"><Domaine>'
           f"<Nom>{domain}</Nom><DNCertificatOperateur>{dn}</DNCertificatOperateur>"
           f"</Domaine></ListeBlanche>")
    path = tmp_path / "liste-blanche.xml"
    path.write_text(xml, encoding="utf-8")
    demo.mss("whitelist", "import", str(path), check=True)
    demo.mss("whitelist", "route", domain, f"127.0.0.1:{demo.ports['RELAY']}", check=True)


def test_whitelist_dn_is_compared_with_what_the_peer_presents(demo: Demo,
                                                               tmp_path: Path) -> None:
    # The "peer" is our own relay: it presents our operator certificate, CN=mss.test.
    peer = f"127.0.0.1:{demo.ports['RELAY']}"
    _whitelist(demo, tmp_path, "autre.test", "CN=autre.test,O=Autre operateur")
    code, report = demo.selftest("--peer", peer)
    check = by_name(report)[f"whitelist.{peer}"]
    assert code == 1 and not report["ok"]
    assert check["status"] == "fail"
    assert "différent de la liste blanche" in check["detail"]
    assert "autre.test attend « CN=autre.test,O=Autre operateur »" in check["detail"]

    _whitelist(demo, tmp_path, "pair.test", "CN=mss.test,O=Opérateur MSS de démonstration")
    code, report = demo.selftest("--peer", peer)
    assert code == 0, report
    assert by_name(report)[f"whitelist.{peer}"]["status"] == "ok"


def test_bad_peer_argument_is_a_usage_error(demo: Demo) -> None:
    done = demo.mss("selftest", "--peer", "sans-port")
    assert done.returncode == 2 and "HÔTE:PORT" in done.stderr


def test_expired_server_certificate_fails(demo: Demo) -> None:
    """Last in the module: it leaves the demo with an expired server certificate."""
    demo.stop()
    app = App.from_data_dir(demo.data)
    now = utcnow()
    with app.db.transaction() as session:
        issued = app.pki.issue_server(session, ["localhost"], ["127.0.0.1"],
                                      not_before=now - timedelta(days=400),
                                      not_after=now - timedelta(days=1))
    pki = app.settings.pki_dir
    write_pair(issued, pki / "server.crt", pki / "server.key")
    app.close()
    demo.start()
    code, report = demo.selftest()
    check = by_name(report)["certificate.submission"]
    assert code == 1 and not report["ok"]
    assert check["status"] == "fail" and "expir" in check["detail"].lower(), check
    assert by_name(report)["certificate.relay"]["status"] == "ok"
