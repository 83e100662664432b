"""Attacks on the edges of mss (issue #14, item 10), each through the real service: a client
that breaks the TLS handshake after STARTTLS (one WARNING line, no ERROR, no traceback); the
demo's secrets kept out of the `mss demo` / `mss run` output; registration telling an
anonymous visitor that an RPPS already has an account only after the proof."""

from __future__ import annotations

import html
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.gateway_fixtures import Operator
from tests.webmail_helpers import Web, post

pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures",
                  "tests.webmail_fixtures"]


def _tls10_client_hello() -> bytes:
    """A TLS 1.0 ClientHello (RFC 2246 §7.4.1.2) offering only AES-CBC-SHA suites."""
    body = (b"\x03\x01" + os.urandom(32) + b"\x00" + b"\x00\x04\x00\x2f\x00\x35"
            + b"\x01\x00")
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


GARBAGE = {"garbage": b"GET / HTTP/1.0\r\n\r\n" * 4, "tls10": _tls10_client_hello()}


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _wait_closed(sock: socket.socket) -> None:
    """Until the server closes the connection (what it sends before is ignored)."""
    sock.settimeout(10)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, TimeoutError):
        pass


@pytest.mark.parametrize("port", ["submission", "relay"])
@pytest.mark.parametrize("payload", list(GARBAGE))
def test_failed_starttls_handshake_is_one_warning(
        operator: Operator, caplog: pytest.LogCaptureFixture, port: str, payload: str) -> None:
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", operator.port(port)), timeout=10) as sock:
        assert _read_reply(sock).startswith(b"220")
        sock.sendall(b"EHLO attaquant.test\r\n")
        assert b"STARTTLS" in _read_reply(sock)
        sock.sendall(b"STARTTLS\r\n")
        assert _read_reply(sock).startswith(b"220")
        sock.sendall(GARBAGE[payload])
        _wait_closed(sock)
    time.sleep(0.3)  # the server's log line is written as it closes
    mine = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in mine] == ["WARNING"], [r.getMessage() for r in mine]
    assert mine[0].exc_info is None and mine[0].name == "mss.gateway"
    assert "127.0.0.1" in mine[0].getMessage() and "STARTTLS" in mine[0].getMessage()
    assert "Traceback" not in caplog.text


def test_garbage_on_the_implicit_tls_port_logs_no_error(
        operator: Operator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", operator.port("submissions")),
                                  timeout=10) as sock:
        sock.sendall(GARBAGE["tls10"])
        _wait_closed(sock)
    time.sleep(0.3)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "Traceback" not in caplog.text


# ---------------------------------------------------------------- secrets in the banners
def _mss(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}
    return subprocess.run([sys.executable, "-m", "mss.cli", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).parent.parent)


def test_demo_and_run_banners_name_the_secret_files_not_the_secrets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mss demo` then the `mss run` banner: the generated password and the operator's TOTP
    seed are in their 0600 files, and appear in neither output (which goes to service
    logs); a file left readable by others by an older version is made 0600 again."""
    from core.settings import Settings
    from mss.app import App
    from mss.cli_run import _print_logins

    data = tmp_path / "data"
    first = _mss(data, "demo")
    assert first.returncode == 0, first.stderr
    password_file, seed_file = data / "demo-password", data / "demo" / "operator-totp.txt"
    password, seed = password_file.read_text().strip(), seed_file.read_text().strip()
    assert len(password) >= 12 and len(seed) >= 16
    for path in (password_file, seed_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    output = first.stdout + first.stderr
    assert password not in output and seed not in output
    assert str(password_file) in first.stdout and str(seed_file) in first.stdout

    password_file.chmod(0o644)
    seed_file.chmod(0o644)
    again = _mss(data, "demo")
    assert again.returncode == 0, again.stderr
    assert password not in again.stdout + again.stderr and seed not in again.stdout
    assert password_file.read_text().strip() == password  # idempotent: the same secrets
    assert seed_file.read_text().strip() == seed
    for path in (password_file, seed_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    app = App(Settings.load(data_dir=data, environ={}))
    try:
        capsys.readouterr()
        _print_logins(app)
        banner = capsys.readouterr().out
    finally:
        app.close()
    assert "marie.martin@mss.test" in banner and "PIN des cartes" in banner
    assert str(password_file) in banner and str(seed_file) in banner
    assert password not in banner and seed not in banner


# ---------------------------------------------------------------- registration enumeration
IDENTITY = {
    "civility": "Dr", "last_name": "Curieux", "first_name": "Jean", "email": "jean@exemple.fr",
    "email_confirm": "jean@exemple.fr", "place_of_practice": "Cabinet", "birth_day": "1",
    "birth_month": "1", "profession": "Médecin", "id_kind": "rpps", "specialty": "",
    "address": "1 rue Haute", "postal_code": "64000", "city": "Pau", "phone": "",
    "mobile": "06 11 22 33 44",
}
EXISTING, FRESH = "10000000001", "10000000099"  # Marie Martin's RPPS; nobody's
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="[^"]+"')  # one per session


def _anonymous_steps(web: Web, number: str) -> tuple[list[tuple[int, str]], FlaskClient]:
    """An anonymous visitor through steps 1 and 2 with ``number``: the (status, page text)
    seen at each step, and the client."""
    client = web.client()
    seen = []
    for path, data in (("/inscription", {"card": "no"}),
                       ("/inscription/identite", {**IDENTITY, "id_number": number})):
        answer = post(client, path, data)
        seen.append((answer.status_code, answer.headers.get("Location", "")))
        follow = client.get(answer.headers["Location"])
        page = _CSRF.sub("csrf", html.unescape(follow.get_data(as_text=True)))
        seen.append((follow.status_code, page))
    return seen, client


def test_registration_does_not_tell_a_stranger_that_an_rpps_has_an_account(web: Web) -> None:
    """Issue #14: the same answers for Marie's RPPS and for an unknown one, up to the code;
    Marie's code goes to her usual address on file, not to the address the visitor typed."""
    before = len(web.mailer.sent)
    existing, _ = _anonymous_steps(web, EXISTING)
    sent_for_existing = [to for to, _raw in web.mailer.sent[before:]]
    fresh, _ = _anonymous_steps(web, FRESH)
    assert existing == fresh
    assert existing[2][1].endswith("/inscription/verification")
    assert "Un compte existe déjà" not in existing[3][1] and "Vérification" in existing[3][1]
    assert sent_for_existing == ["marie@exemple.fr"]  # her address on file, not jean@
    assert [to for to, _raw in web.mailer.sent[before:]][-1] == "jean@exemple.fr"


def test_after_the_code_the_holder_is_told_the_account_exists(web: Web) -> None:
    _seen, client = _anonymous_steps(web, EXISTING)
    wrong = post(client, "/inscription/verification", {"code": "000000"})
    assert wrong.status_code == 400 and "Code incorrect" in wrong.get_data(as_text=True)
    code = web.mailer.last_code("marie@exemple.fr")
    proven = post(client, "/inscription/verification", {"code": code})
    page = proven.get_data(as_text=True)
    assert proven.status_code == 409
    assert "Un compte existe déjà" in page and 'href="/connexion"' in page
    assert client.get("/inscription/identifiant").status_code == 302  # the wizard is over


def test_the_code_cannot_be_guessed_nor_skipped(web: Web) -> None:
    _seen, client = _anonymous_steps(web, EXISTING)
    skipped = client.get("/inscription/identifiant")
    assert skipped.headers["Location"].endswith("/inscription/verification")
    for _ in range(5):
        post(client, "/inscription/verification", {"code": "000001"})
    code = web.mailer.last_code("marie@exemple.fr")
    late = post(client, "/inscription/verification", {"code": code})
    assert late.status_code == 400 and "Trop d'essais" in html.unescape(late.get_data(
        as_text=True))
