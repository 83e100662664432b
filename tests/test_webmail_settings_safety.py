"""Issue #15 item 1, through Flask's test client on a real Dovecot and gateway: a settings change
can no longer lock a user out. SMS with an empty number is a field error that changes nothing
(the old channel and number stay, the next login works); a new mobile is used only once the code
sent to it is typed; the usual address cannot be cleared while codes go there, and a new one is
confirmed by a code sent to it; every such change asks for the password again (a card session
need not), and a wrong password counts into the one lock-out."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from core.audit import AuditRecord
from tests.webmail_helpers import PASSWORD, Web, login, post
from tests.webmail_mail_helpers import address, text
from trust_space.models import Account, OtpChannel, Professional

pytest_plugins = ["tests.webmail_mail_fixtures"]
PAUL_MOBILE = "+33600000009"


@pytest.fixture
def web(mail_web: Web) -> Iterator[Web]:
    """The module's webmail with Marie and Paul as the fixtures made them: e-mail codes, Paul's
    mobile known, nothing locked."""
    _reset(mail_web)
    yield mail_web
    _reset(mail_web)


def _reset(web: Web) -> None:
    with web.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login != "louis.petit@mss.test")
                        .values(failed_attempts=0, code_failures=0, locked_until=None,
                                otp_channel=OtpChannel.EMAIL))
        for pro in session.scalars(select(Professional)):
            pro.usual_email = f"{pro.first_name.lower()}@exemple.fr"
            pro.mobile = PAUL_MOBILE if pro.first_name == "Paul" else ""


def _state(web: Web, who: str) -> tuple[OtpChannel, str, str, int]:
    with web.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == address(who)))
        assert account is not None and account.professional is not None
        return (account.otp_channel, account.professional.mobile,
                account.professional.usual_email, account.failed_attempts)


def _spool(web: Web) -> Path:
    return Path(web.app.extensions["mss"].sms.spool)


def _sms(web: Web, to: str) -> list[str]:
    spool = _spool(web)
    texts = [json.loads(p.read_text()) for p in sorted(spool.glob("*.json"))] \
        if spool.exists() else []
    return [t["text"] for t in texts if t["to"] == to]


def _sms_code(web: Web, to: str) -> str:
    return re.search(r"\b(\d{6})\b", _sms(web, to)[-1]).group(1)  # type: ignore[union-attr]


def _sms_login(web: Web, client: FlaskClient, who: str, number: str) -> str:
    answer = post(client, "/connexion", {"identifier": address(who), "password": PASSWORD})
    assert answer.status_code == 302, text(answer)
    assert "par SMS" in text(client.get("/connexion/code"))
    answer = post(client, "/connexion/code", {"code": _sms_code(web, number)})
    assert answer.status_code == 302, text(answer)
    return str(answer.headers["Location"])


def _actions(web: Web, who: str) -> list[tuple[str, str]]:
    with web.space.db.transaction() as session:
        return [(r.action, r.outcome) for r in session.scalars(
            select(AuditRecord).where(AuditRecord.target == address(who))
            .order_by(AuditRecord.id))]


def test_sms_with_an_empty_number_changes_nothing_and_the_next_login_works(web: Web) -> None:
    with web.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login == address("paul"))
                        .values(otp_channel=OtpChannel.SMS))
    client = web.client()
    assert _sms_login(web, client, "paul", PAUL_MOBILE).startswith("/courrier/")
    answer = post(client, "/compte/code", {"channel": "sms", "mobile": "",
                                           "password": PASSWORD})
    page = text(answer)
    assert answer.status_code == 200 and "Indiquez votre numéro de mobile" in page
    assert 'id="mobile-err"' in page  # the error is on the field
    assert _state(web, "paul")[:2] == (OtpChannel.SMS, PAUL_MOBILE)  # kept, not erased
    post(client, "/compte", {}, action="/deconnexion")
    again = web.client()
    assert _sms_login(web, again, "paul", PAUL_MOBILE).startswith("/courrier/")
    assert again.get("/compte").status_code == 200


def test_e_mail_user_choosing_sms_without_a_number_keeps_e_mail(web: Web) -> None:
    client = web.client()
    login(web, client, "marie")
    answer = post(client, "/compte/code", {"channel": "sms", "mobile": "",
                                           "password": PASSWORD})
    assert answer.status_code == 200 and "Indiquez votre numéro de mobile" in text(answer)
    assert _state(web, "marie")[:2] == (OtpChannel.EMAIL, "")
    login(web, web.client(), "marie")  # still by e-mail


def test_a_new_mobile_is_used_only_after_its_code(web: Web) -> None:
    client = web.client()
    login(web, client, "marie")
    number = "06 11 22 33 44"
    answer = post(client, "/compte/code", {"channel": "sms", "mobile": number,
                                           "password": PASSWORD})
    assert answer.status_code == 302 and answer.headers["Location"] == "/compte/confirmer"
    page = text(client.get("/compte/confirmer"))
    assert "•• •• •• •• 44" in page and number not in page
    assert _state(web, "marie")[:2] == (OtpChannel.EMAIL, "")  # not used yet
    login(web, web.client(), "marie")  # the next login still goes by e-mail
    wrong = post(client, "/compte/confirmer", {"code": "000000"})
    assert wrong.status_code == 200 and "Code incorrect" in text(wrong)
    assert _state(web, "marie")[:2] == (OtpChannel.EMAIL, "")
    done = post(client, "/compte/confirmer", {"code": _sms_code(web, number)})
    assert done.status_code == 302 and done.headers["Location"] == "/compte/code"
    assert "est enregistré" in text(client.get("/compte/code"))
    assert _state(web, "marie")[:2] == (OtpChannel.SMS, number)
    assert ("account.mobile", "ok") in _actions(web, "marie")
    assert ("account.otp_channel", "ok") in _actions(web, "marie")
    assert _sms_login(web, web.client(), "marie", number).startswith("/courrier/")


def test_a_code_for_the_new_mobile_expires_after_five_tries(web: Web) -> None:
    client = web.client()
    login(web, client, "marie")
    post(client, "/compte/code", {"channel": "sms", "mobile": "0611223355",
                                  "password": PASSWORD})
    for _ in range(5):
        assert "Code incorrect" in text(post(client, "/compte/confirmer", {"code": "000000"}))
    right = _sms_code(web, "0611223355")
    answer = post(client, "/compte/confirmer", {"code": right})
    assert answer.status_code == 302
    assert "plus valable" in text(client.get(answer.headers["Location"]))
    assert _state(web, "marie")[:2] == (OtpChannel.EMAIL, "")


def test_clearing_the_usual_address_while_codes_go_there_is_refused(web: Web) -> None:
    client = web.client()
    login(web, client, "marie")
    answer = post(client, "/compte/preferences", {"usual_email": "", "password": PASSWORD})
    assert answer.status_code == 200
    assert "Vos codes de connexion sont envoyés à cette adresse" in text(answer)
    assert _state(web, "marie")[2] == "marie@exemple.fr"
    login(web, web.client(), "marie")


def test_a_new_usual_address_is_confirmed_by_a_code_sent_to_it(web: Web) -> None:
    client = web.client()
    login(web, client, "marie")
    answer = post(client, "/compte/preferences", {"usual_email": "Marie.Neuve@Exemple.fr",
                                                  "liste_rouge": "y", "password": PASSWORD})
    assert answer.status_code == 302 and answer.headers["Location"] == "/compte/confirmer"
    assert "m•••@exemple.fr" in text(client.get("/compte/confirmer"))
    assert _state(web, "marie")[2] == "marie@exemple.fr"  # codes still go to the old one
    code = web.mailer.last_code("marie.neuve@exemple.fr")
    assert post(client, "/compte/confirmer", {"code": code}).status_code == 302
    assert _state(web, "marie")[2] == "marie.neuve@exemple.fr"
    assert ("account.usual_email", "ok") in _actions(web, "marie")
    to, notice = web.mailer.sent[-1]  # the previous address is told
    assert to == "marie@exemple.fr" and b"Changement sur votre compte" in notice
    answer = post(web.client(), "/connexion", {"identifier": address("marie"),
                                               "password": PASSWORD})
    assert answer.status_code == 302
    assert web.mailer.sent[-1][0] == "marie.neuve@exemple.fr"


def test_changes_without_the_password_are_refused_and_counted(web: Web) -> None:
    client = web.client()
    login(web, client, "marie")
    sent = len(web.mailer.sent)
    for data in ({"channel": "sms", "mobile": "0611223366"},
                 {"channel": "sms", "mobile": "0611223366", "password": "Mauvais-Passw0rd"}):
        answer = post(client, "/compte/code", data)
        assert answer.status_code == 200 and "Mot de passe incorrect" in text(answer)
    answer = post(client, "/compte/preferences", {"usual_email": "autre@exemple.fr"})
    assert answer.status_code == 200 and "Mot de passe incorrect" in text(answer)
    channel, mobile, usual, failures = _state(web, "marie")
    assert (channel, mobile, usual) == (OtpChannel.EMAIL, "", "marie@exemple.fr")
    assert failures == 3  # into the one lock-out counter, like the log-in page
    assert _sms(web, "0611223366") == [] and len(web.mailer.sent) == sent
    assert _actions(web, "marie").count(("account.otp_channel", "wrong_password")) == 2
    assert ("account.usual_email", "wrong_password") in _actions(web, "marie")


def test_a_card_session_needs_no_password(web: Web) -> None:
    client = web.client(card="marie")
    assert post(client, "/connexion", {}, action="/connexion/carte").status_code == 302
    page = text(client.get("/compte/code"))
    assert 'id="password"' not in page
    answer = post(client, "/compte/code", {"channel": "sms", "mobile": "0611223377"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/compte/confirmer"
    assert post(client, "/compte/confirmer",
                {"code": _sms_code(web, "0611223377")}).status_code == 302
    assert _state(web, "marie")[:2] == (OtpChannel.SMS, "0611223377")


def test_an_account_left_with_sms_and_no_number_gets_its_code_by_e_mail(web: Web) -> None:
    """Accounts the old bug left with SMS and an erased number are not locked out: the code
    goes to the usual address instead of "Envoi impossible" (503)."""
    with web.space.db.transaction() as session:
        session.execute(update(Account).where(Account.login == address("marie"))
                        .values(otp_channel=OtpChannel.SMS))
    client = web.client()
    login(web, client, "marie")  # the code by e-mail, landing in the inbox
    with web.space.db.transaction() as session:
        outcome = session.scalars(select(AuditRecord.request).where(
            AuditRecord.action == "login.code_sent", AuditRecord.target == address("marie"))
            .order_by(AuditRecord.id.desc())).first()
    assert outcome is not None and '"email"' in outcome
