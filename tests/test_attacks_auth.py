"""Attacks on authentication (issue #14, items 2 and 4), each through the real service.

- Item 4: wrong one-time codes must not be forgiven by a correct password (password → 4 wrong
  codes → password → 4 wrong codes … used to never lock).
"""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
from sqlalchemy import delete, select, update

from core.audit import AuditRecord
from core.db import utcnow
from tests.webmail_helpers import OPERATOR, OPERATOR_SEED, PASSWORD, Web, post
from trust_space.models import Account

pytest_plugins = ["tests.webmail_fixtures"]
MARIE = "marie.martin@mss.test"
LOCKED = "temporairement bloqué"


def _text(answer) -> str:  # type: ignore[no-untyped-def]
    return re.sub(r'value="[^"]*"', "", answer.get_data(as_text=True))


def _account(web: Web, login: str) -> Account:
    with web.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == login))
        assert account is not None
        session.expunge(account)
        return account


def _expire_lock(web: Web, login: str) -> None:
    """What ``login_lock_minutes`` of waiting does: the lock lies in the past."""
    with web.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login == login)
                        .values(locked_until=utcnow() - timedelta(seconds=1)))


def test_a_correct_password_does_not_forgive_wrong_codes(web: Web) -> None:
    client = web.client()
    assert post(client, "/connexion", {"identifier": MARIE, "password": PASSWORD}
                ).status_code == 302
    for _ in range(4):
        assert post(client, "/connexion/code", {"code": "000000"}).status_code == 401
    # The attacker knows the password and starts again, hoping for 4 more guesses.
    again = web.client()
    assert post(again, "/connexion", {"identifier": MARIE, "password": PASSWORD}
                ).status_code == 302
    assert _account(web, MARIE).code_failures == 4
    answer = post(again, "/connexion/code", {"code": "000000"})
    assert answer.status_code == 403 and LOCKED in _text(answer)
    locked = _account(web, MARIE)
    assert locked.locked_until is not None and locked.locked_until > utcnow()
    # Locked: neither the password nor a right code gets in now.
    refused = post(web.client(), "/connexion", {"identifier": MARIE, "password": PASSWORD})
    assert refused.status_code == 401 and LOCKED in _text(refused)
    with web.space.db.transaction() as session:
        outcomes = session.scalars(select(AuditRecord.outcome).where(
            AuditRecord.actor == MARIE, AuditRecord.action == "login.code")).all()
    assert outcomes.count("wrong") >= 4 and "account_locked" in outcomes


def test_after_the_lock_expires_the_right_password_and_code_log_in(web: Web) -> None:
    client = web.client()
    for _ in range(2):  # 3 + 2 wrong codes over two password logins
        post(client, "/connexion", {"identifier": MARIE, "password": PASSWORD})
        for _ in range(3):
            if post(client, "/connexion/code", {"code": "000000"}).status_code == 403:
                break
    assert _account(web, MARIE).locked_until is not None
    _expire_lock(web, MARIE)
    fresh = web.client()
    assert post(fresh, "/connexion", {"identifier": MARIE, "password": PASSWORD}
                ).status_code == 302
    assert _account(web, MARIE).code_failures == 0  # the expiry started the count again
    assert post(fresh, "/connexion/code", {"code": "000000"}).status_code == 401
    code = web.mailer.last_code("marie@exemple.fr")
    answer = post(fresh, "/connexion/code", {"code": code})
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    after = _account(web, MARIE)
    assert after.code_failures == 0 and after.failed_attempts == 0


def test_operator_totp_guesses_add_up_across_password_logins(web: Web) -> None:
    from webmail.models import TotpUse

    with web.space.db.transaction() as session:
        session.execute(delete(TotpUse))
    right = pyotp.TOTP(OPERATOR_SEED).now()
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    statuses: list[int | str] = []
    while len(statuses) < 6 and 403 not in statuses:  # 2 wrong TOTP codes per password login
        client = web.client()
        if post(client, "/connexion", {"identifier": OPERATOR, "password": PASSWORD}
                ).status_code != 302:
            statuses.append("password_refused")
            break
        for _ in range(2):
            statuses.append(post(client, "/connexion/code", {"code": wrong}).status_code)
            if statuses[-1] == 403:
                break
    assert statuses == [401, 401, 401, 401, 403]
    assert _account(web, OPERATOR).locked_until is not None
    _expire_lock(web, OPERATOR)
    client = web.client()
    assert post(client, "/connexion", {"identifier": OPERATOR, "password": PASSWORD}
                ).status_code == 302
    assert post(client, "/connexion/code", {"code": right}).status_code == 302
    assert client.get("/operateur/inscriptions").status_code == 200
