"""Fixtures for the webmail's Flask test-client tests: the mail-store trust space
(``tests.mailstore_fixtures.build``: Marie, Paul, Julie, locked Louis, suspended Sophie, the
Pharmacie du Centre with Paul administrator and Julie user, card files including a stranger's
and a revoked one), an operator account, and a fresh application per test with a recording
mailer and a file SMS spool. Load with ``pytest_plugins = ["tests.webmail_fixtures"]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from tests.mailstore_fixtures import TrustSpace, build, make_settings
from tests.webmail_helpers import OPERATOR, OPERATOR_SEED, PASSWORD, RecordingMailer, Web
from trust_space.accounts import hash_password
from trust_space.models import Account, AccountKind, OtpChannel, Professional
from webmail import create_app
from webmail.auth import otp
from webmail.auth.sms import FileSmsProvider


@pytest.fixture(scope="module")
def web_space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustSpace]:
    data = tmp_path_factory.mktemp("webmail") / "data"
    data.mkdir()
    space = build(make_settings(data, web_port=0))
    with space.db.transaction() as session:
        for pro in session.scalars(select(Professional)):
            pro.usual_email = f"{pro.first_name.lower()}@exemple.fr"
            pro.mobile = "+33600000009"
        # `mss demo` already creates this operator: replace it with a known TOTP seed.
        session.execute(delete(Account).where(Account.login == OPERATOR))
        session.add(Account(login=OPERATOR, kind=AccountKind.PROFESSIONAL, is_operator=True,
                            password_hash=hash_password(PASSWORD), failed_attempts=0,
                            otp_channel=OtpChannel.TOTP,
                            totp_secret=otp.seal_seed(OPERATOR_SEED, space.settings.secret())))
    yield space
    space.db.dispose()


@pytest.fixture
def web(web_space: TrustSpace, tmp_path: Path) -> Web:
    """A fresh application; accounts unlocked (except Louis, locked by design)."""
    with web_space.db.transaction() as session:
        session.execute(update(Account).where(Account.login != "louis.petit@mss.test")
                        .values(failed_attempts=0, code_failures=0, locked_until=None))
    mailer, syncs = RecordingMailer(), []
    spool = tmp_path / "sms"
    app = create_app(web_space.settings, web_space.db,
                     {"TESTING": True, "RATE_LOGIN": "1000 per minute",
                      "RATE_CODE": "1000 per minute"},
                     mailer=mailer, sms=FileSmsProvider(spool),
                     acl_sync=lambda: syncs.append(1))
    return Web(web_space, app, mailer, spool, syncs)
