"""The gateway through the real ``mss`` command: ``mss init`` prepares the webmail's service
account, ``mss run --role gateway`` listens and serves metrics, ``mss queue`` answers."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

from sqlalchemy import select

from core.db import Database
from tests.ports import free_port
from trust_space.models import Account, AccountKind

MSS = [sys.executable, "-m", "mss.cli"]




def test_init_then_run_the_gateway_role(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ports = {name: free_port() for name in ("SUBMISSION", "SUBMISSIONS", "RELAY", "METRICS")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}
    env.update({f"MSS_{name}_PORT": str(port) for name, port in ports.items()})
    env["MSS_DATA_DIR"] = str(data)
    env["MSS_WHITELIST_URL"] = ""  # tests fetch nothing from the internet
    subprocess.run([*MSS, "init", "--domain", "mss.test"], env=env, check=True,
                   capture_output=True)
    secret = data / "webmail.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    db = Database(f"sqlite:///{data / 'mss.db'}")
    with db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == "webmail@mss.test"))
        assert account is not None and account.kind is AccountKind.SERVICE
    db.dispose()
    proc = subprocess.Popen([*MSS, "run", "--role", "gateway"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert any(f"127.0.0.1:{ports['RELAY']}" in line for line in lines), lines
        with socket.create_connection(("127.0.0.1", ports["SUBMISSION"]), timeout=10) as sock:
            assert sock.recv(200).startswith(b"220 ")
        url = f"http://127.0.0.1:{ports['METRICS']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        assert b"mss_queue_depth 0.0" in body
        assert b"mss_queue_oldest_age_seconds 0.0" in body  # issue #20: read at each scrape
        for label in (b"server", b"operator", b"issuing_ca", b"root_ca"):
            assert b'mss_certificate_expiry_days{certificate="' + label + b'"}' in body
        crl = re.search(rb"^mss_crl_next_update_days (\S+)$", body, re.M)
        assert crl is not None and 6.9 < float(crl[1]) <= 7  # mss init's fresh 7-day CRL
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        proc.stdout.close()  # type: ignore[union-attr]
    listed = subprocess.run([*MSS, "queue", "list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "0 message(s)" in listed.stderr
    deleted = subprocess.run([*MSS, "queue", "delete", "NOPE"], env=env, capture_output=True,
                             text=True)
    assert deleted.returncode == 1 and "inconnu" in deleted.stderr
