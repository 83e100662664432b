"""Fixtures for the mail views' Flask test-client tests: a running operator (real Dovecot and
gateway on loopback, ``tests.gateway_fixtures``) with the webmail application over the same
data directory — it opens mailboxes through Dovecot's master user and sends through the
gateway's submission port. People and roles are those of ``tests.mailstore_fixtures``
(Paul administrator and Julie user of the Pharmacie du Centre), plus an operator account.
Load with ``pytest_plugins = ["tests.webmail_mail_fixtures"]``; helpers are in
``tests.webmail_mail_helpers``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import delete, select, update

from tests.gateway_fixtures import Operator, build_operator, start_operator, stop_operator
from tests.mailstore_fixtures import open_tempdir
from tests.webmail_helpers import (
    OPERATOR,
    OPERATOR_SEED,
    PASSWORD,
    RecordingMailer,
    Web,
    login,
    login_operator,
)
from trust_space.accounts import hash_password
from trust_space.models import (
    Account,
    AccountKind,
    Delegation,
    Mailbox,
    OtpChannel,
    Professional,
    Role,
)
from webmail import create_app
from webmail.auth import otp
from webmail.auth.sms import FileSmsProvider

ORG_ADDRESS = "pharma.ducentre.64000@mss.test"


@pytest.fixture(scope="module")
def operator_overrides() -> dict[str, object]:
    """Settings of the module's operator (a test module may override this fixture)."""
    return {}


@pytest.fixture(scope="module")
def mail_operator(operator_overrides: dict[str, object]) -> Iterator[Operator]:
    """A running operator (mss.test) for one test module, with usual e-mail addresses (the
    code e-mails), Emma manager of the Pharmacie du Centre, and an operator account."""
    root = open_tempdir("mss-webmail-mail-")
    # Messages leave at once unless a test chooses an undo delay (test_webmail_writing).
    space = build_operator(root, "mss.test", "Operateur Un",
                           **{"max_message_size": 400_000, "undo_send_seconds": 0,
                              **operator_overrides})
    with space.db.transaction() as session:
        for pro in session.scalars(select(Professional)):
            pro.usual_email = f"{pro.first_name.lower()}@exemple.fr"
        org = session.scalar(select(Mailbox).where(Mailbox.address == ORG_ADDRESS))
        emma = session.scalar(select(Professional).where(Professional.first_name == "Emma"))
        session.add(Delegation(mailbox=org, professional=emma, role=Role.MANAGER))
        # `mss demo` already creates this operator: replace it with a known TOTP seed.
        session.execute(delete(Account).where(Account.login == OPERATOR))
        session.add(Account(login=OPERATOR, kind=AccountKind.PROFESSIONAL, is_operator=True,
                            password_hash=hash_password(PASSWORD), failed_attempts=0,
                            otp_channel=OtpChannel.TOTP,
                            totp_secret=otp.seal_seed(OPERATOR_SEED, space.settings.secret())))
    op = start_operator(space)
    yield op
    stop_operator(op)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mail_web(mail_operator: Operator, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Web]:
    """The webmail on that operator (one application per module: its IMAP pool is reused)."""
    settings = mail_operator.settings.replace(
        submission_port=mail_operator.port("submission"))
    app = create_app(settings, mail_operator.space.db,
                     {"TESTING": True, "RATE_LOGIN": "1000 per minute",
                      "RATE_CODE": "1000 per minute"},
                     mailer=RecordingMailer(),
                     sms=FileSmsProvider(tmp_path_factory.mktemp("sms")),
                     acl_sync=lambda: None)
    yield Web(mail_operator.space, app, app.extensions["mss"].mailer,
              tmp_path_factory.mktemp("sms2"))
    pool = app.extensions.get("mss.imap")
    if pool is not None:
        pool.close()


@pytest.fixture
def as_user(mail_web: Web) -> Callable[[str], FlaskClient]:
    """A logged-in test client for a person of ``PEOPLE`` ("marie", "paul", "julie", …) or
    "operator"."""
    with mail_web.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login != "louis.petit@mss.test")
                        .values(failed_attempts=0, locked_until=None))

    def make(who: str) -> FlaskClient:
        client = mail_web.client()
        if who == "operator":
            login_operator(mail_web, client)
        else:
            login(mail_web, client, who)
        return client

    return make
