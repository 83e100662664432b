"""Helpers of the webmail tests: the test-client wrapper, CSRF-aware posting, log-in."""

from __future__ import annotations

import email
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
from flask import Flask
from flask.testing import FlaskClient

from tests.mailstore_fixtures import PEOPLE, TrustSpace
from webmail.tls import CLIENT_CERT_ENV

PASSWORD = "Demo-Passw0rd"
OPERATOR = "operateur@mss.test"
OPERATOR_SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
_TOKEN = re.compile(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"')


@dataclass
class RecordingMailer:
    """An in-memory ``Mailer`` (unit tests only; the browser tests use a real SMTP sink)."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def send(self, to: str, message: bytes) -> None:
        self.sent.append((to, message))

    def last_code(self, to: str) -> str:
        for rcpt, raw in reversed(self.sent):
            if rcpt == to:
                body = email.message_from_bytes(raw).get_payload(decode=True).decode()
                return re.search(r"\b(\d{6})\b", body).group(1)  # type: ignore[union-attr]
        raise AssertionError(f"no message to {to}")


@dataclass
class Web:
    space: TrustSpace
    app: Flask
    mailer: RecordingMailer
    sms_spool: Path
    acl_syncs: list[int] = field(default_factory=list)

    def client(self, card: str | None = None) -> FlaskClient:
        """A test client speaking "HTTPS", presenting the named card certificate if any."""
        client = self.app.test_client()
        client.environ_base["wsgi.url_scheme"] = "https"
        client.environ_base["REMOTE_ADDR"] = "127.0.0.1"
        if card is not None:
            client.environ_base[CLIENT_CERT_ENV] = self.space.cards[card][0].read_text()
        return client

    def sms_code(self, to: str) -> str:
        for path in sorted(self.sms_spool.glob("*.json"), reverse=True):
            data = json.loads(path.read_text())
            if data["to"] == to:
                return re.search(r"\b(\d{6})\b", data["text"]).group(1)  # type: ignore[union-attr]
        raise AssertionError(f"no SMS to {to}")


def token(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form at ``path``."""
    page = client.get(path)
    found = _TOKEN.search(page.get_data(as_text=True))
    assert found, f"no CSRF token on {path} ({page.status_code})"
    return found.group(1)


def post(client: FlaskClient, form_path: str, data: dict[str, object],
         action: str | None = None):  # type: ignore[no-untyped-def]
    """Submit the form at ``form_path`` (to ``action``, default the same path) with its token."""
    return client.post(action or form_path, data={"csrf_token": token(client, form_path), **data})


def login(web: Web, client: FlaskClient, who: str = "marie") -> None:
    """Password + e-mailed code log-in of a demo person."""
    address = f"{PEOPLE[who].local}@mss.test"
    answer = post(client, "/connexion", {"identifier": address, "password": PASSWORD})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    code = web.mailer.last_code(f"{PEOPLE[who].first.lower()}@exemple.fr")
    answer = post(client, "/connexion/code", {"code": code})
    # Issue #15 item 3: straight to the Boîte de réception of the personal mailbox.
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/courrier/")


def login_operator(web: Web, client: FlaskClient) -> None:
    """TOTP log-in of the operator (the replay guard is reset: tests log in often)."""
    from sqlalchemy import delete

    from webmail.models import TotpUse

    with web.space.db.transaction() as session:
        session.execute(delete(TotpUse))
    answer = post(client, "/connexion", {"identifier": OPERATOR, "password": PASSWORD})
    assert answer.status_code == 302
    assert post(client, "/connexion/code",
                {"code": pyotp.TOTP(OPERATOR_SEED).now()}).status_code == 302


