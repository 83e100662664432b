"""`mss account …` through the real command, on a real data directory."""

from __future__ import annotations

import email
import re
from pathlib import Path

import pyotp
from sqlalchemy import select

from core.settings import Settings
from mss.app import App
from tests.test_cli import assert_clean_error, mss
from trust_space import registration
from trust_space.accounts import hash_password
from trust_space.models import Account, Mailbox, MailboxState
from webmail.auth import otp


def _register(app: App, first: str, rpps: str, usual: str) -> str:
    data = registration.Registration(
        rpps=rpps, adeli=None, password_hash=hash_password("Passw0rd-Test"),
        professional={"first_name": first, "last_name": "Durand", "profession": "Médecin",
                      "usual_email": usual, "postal_code": "64000", "city": "Pau"})
    with app.db.transaction() as session:
        return registration.register(session, data, "mss.test")[0].address


def test_account_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert mss(data, "init").returncode == 0
    app = App(Settings.load(data_dir=data, environ={}))
    first = _register(app, "Anne", "10000000091", "anne@exemple.fr")
    second = _register(app, "Bruno", "10000000092", "bruno@exemple.fr")
    listed = mss(data, "account", "list", "--pending")
    assert first in listed.stdout and second in listed.stdout
    assert mss(data, "account", "validate", first).returncode == 0
    assert mss(data, "account", "refuse", second).returncode == 0
    assert_clean_error(mss(data, "account", "validate", first), "Aucune inscription")
    with app.db.transaction() as session:
        states = dict(session.execute(select(Mailbox.address, Mailbox.state)).all())
        assert session.scalar(select(Mailbox.smime_cert_pem).where(Mailbox.address == first))
    assert states[first] is MailboxState.PUBLISHED and states[second] is MailboxState.CLOSED
    sent = [email.message_from_bytes(p.read_bytes()) for p in (data / "spool" / "mail").iterdir()]
    assert {m["To"] for m in sent} == {"anne@exemple.fr", "bruno@exemple.fr"}
    made = mss(data, "account", "operator", "operateur@mss.test",
               input="Operat-Passw0rd\nOperat-Passw0rd\n")
    assert made.returncode == 0, made.stderr
    seed = re.search(r"^  ([A-Z2-7]{32})$", made.stdout, re.M).group(1)  # type: ignore[union-attr]
    with app.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == "operateur@mss.test"))
        assert account is not None and account.is_operator
        assert otp.open_seed(account.totp_secret or "", app.settings.secret()) == seed
    assert pyotp.TOTP(seed).now().isdigit()
    assert mss(data, "account", "unlock", "operateur@mss.test").returncode == 0
    app.close()
