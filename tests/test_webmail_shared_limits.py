"""The webmail's limits are shared by every webmail process of an operator (issue #19): the
request limits per address (Flask-Limiter, ``webmail.limits``) and the per-identifier guards
(unknown identifiers' lock-outs, the password reset's limits) are counted in the database
(``core.counters``). With per-process memory, N processes let N times the guesses through.

The second webmail is a real second Python process on the same data directory and database:
what it counts must hold in this one, and the other way round.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete

from core import counters
from core.db import Database
from tests.mailstore_fixtures import TrustSpace
from tests.webmail_helpers import PASSWORD, RecordingMailer, Web, post
from webmail import create_app
from webmail.auth.sms import FileSmsProvider

pytest_plugins = ["tests.webmail_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
UNKNOWN = "personne.inconnue@mss.test"
MARIE = "marie.durand@mss.test"
LOCKED = "temporairement bloqué"

# The other process: the same application on the same data directory, driven by a test
# client; prints the status and whether the page says "blocked" for each request.
OTHER = """
import json, sys
from pathlib import Path
from core.db import Database
from core.settings import Settings
from tests.webmail_helpers import RecordingMailer, post
from webmail import create_app
from webmail.auth.sms import FileSmsProvider

data, config, requests = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
settings = Settings.load(data_dir=data, environ={}, demo_password="x")
db = Database(settings.effective_database_url)
app = create_app(settings, db, {"TESTING": True, **config}, mailer=RecordingMailer(),
                 sms=FileSmsProvider(data / "sms-other"), acl_sync=lambda: None)
client = app.test_client()
client.environ_base.update({"wsgi.url_scheme": "https", "REMOTE_ADDR": "127.0.0.1"})
out = []
for path, form in requests:
    answer = post(client, path, form)
    page = answer.get_data(as_text=True)
    out.append([answer.status_code, "bloqué" in page or "Trop de demandes" in page])
print(json.dumps(out))
"""


def _other_process(space: TrustSpace, config: dict[str, str],
                   requests: list[tuple[str, dict[str, str]]]) -> list[list[object]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", OTHER, str(space.settings.data_dir),
                           json.dumps(config), json.dumps(requests)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: list[list[object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def limited(web_space: TrustSpace, tmp_path: Path) -> Iterator[Web]:
    """This process's webmail with small limits, every count forgotten before and after."""
    with web_space.db.transaction() as session:
        session.execute(delete(counters.WindowCount))
    app = create_app(web_space.settings, web_space.db,
                     {"TESTING": True, "RATE_LOGIN": "4 per minute", "RATE_CODE": "100 per minute"},
                     mailer=RecordingMailer(), sms=FileSmsProvider(tmp_path / "sms"),
                     acl_sync=lambda: None)
    yield Web(web_space, app, RecordingMailer(), tmp_path / "sms", [])
    with web_space.db.transaction() as session:
        session.execute(delete(counters.WindowCount))


def _login(identifier: str) -> tuple[str, dict[str, str]]:
    return "/connexion", {"identifier": identifier, "password": "pas-le-bon"}


def test_the_address_limit_counts_the_requests_of_both_processes(limited: Web) -> None:
    client = limited.client()
    assert post(client, *_login(UNKNOWN)).status_code == 401
    assert post(client, *_login(UNKNOWN + "x")).status_code == 401
    # The other process has seen 2 of the 4 log-ins this address may post in the minute.
    other = _other_process(limited.space, {"RATE_LOGIN": "4 per minute"},
                           [_login("a@mss.test"), _login("b@mss.test"), _login("c@mss.test")])
    assert [status for status, _ in other] == [401, 401, 429]
    assert post(client, *_login(UNKNOWN)).status_code == 429  # and this one sees its 2
    assert post(client, "/connexion", {"identifier": MARIE, "password": PASSWORD}
                ).status_code == 429  # even the right password: the address waits


def test_an_unknown_identifier_locked_in_one_process_is_locked_in_the_other(
        limited: Web) -> None:
    limited.app.config["RATE_LOGIN"] = "100 per minute"
    failures = limited.space.settings.login_max_failures
    other = _other_process(limited.space, {"RATE_LOGIN": "100 per minute"},
                           [_login(UNKNOWN)] * failures)
    # "L'accès est maintenant bloqué" on the last one only, as for a real account.
    assert other[-1] == [401, True] and not any(locked for _, locked in other[:-1])
    for spelling in (UNKNOWN, UNKNOWN.upper()):
        answer = post(limited.client(), *_login(spelling))
        # The same words as a real account locked by the same number of wrong passwords.
        assert answer.status_code == 401 and LOCKED in answer.get_data(as_text=True)
    with limited.space.db.read() as session:
        assert limited.app.extensions["mss.phantoms"].count(session, UNKNOWN) == failures


def test_password_reset_requests_are_counted_across_processes(limited: Web) -> None:
    ask = ("/connexion/mot-de-passe-oublie", {"identifier": MARIE, "channel": "email"})
    other = _other_process(limited.space, {"RATE_LOGIN": "100 per minute"}, [ask, ask])
    assert [status for status, _ in other] == [302, 302]
    limited.app.config["RATE_LOGIN"] = "100 per minute"
    client = limited.client()
    assert post(client, *ask).status_code == 302  # the third of three
    refused = post(limited.client(), *ask)
    assert refused.status_code == 429 and "Trop de demandes" in refused.get_data(as_text=True)


def test_counters_on_both_engines(db: Database) -> None:
    """``core.counters`` itself, on SQLite and PostgreSQL, with two engines (two processes)."""
    db.create_all()
    other = Database(db.url)
    try:
        t = 2_000_000_000.0
        with db.appending() as conn:
            assert counters.add(conn, "limit:a", 60, now=t) == 1
        with other.appending() as conn:
            assert counters.add(conn, "limit:a", 60, 2, now=t + 10) == 3
        with db.reading() as conn:
            assert counters.read(conn, "limit:a", now=t + 59) == (3, t + 60)  # fixed window
            assert counters.read(conn, "limit:a", now=t + 60) == (0, None)
        with other.appending() as conn:  # a new window starts at the amount added
            assert counters.add(conn, "limit:a", 60, now=t + 61) == 1
        with db.transaction() as session:  # extend: from the last addition (a lock-out)
            counters.add(session, "phantom:x", 900, extend=True, now=t)
            assert counters.add(session, "phantom:x", 900, extend=True, now=t + 800) == 2
        with db.read() as session:
            assert counters.read(session, "phantom:x", now=t + 1600) == (2, t + 1700)
        with db.transaction() as session:  # a prefix is a prefix, not a LIKE pattern
            counters.add(session, "limitXb", 60, now=t)
            assert counters.clear_prefix(session, "limit:") == 1
            assert counters.read(session, "limitXb", now=t)[0] == 1
    finally:
        other.dispose()
